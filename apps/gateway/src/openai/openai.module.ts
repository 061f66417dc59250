import { Module } from '@nestjs/common';
import { GenerationModule } from '../generation/generation.module';
import { WorkersModule } from '../workers/workers.module';
import { CompletionsController } from './completions.controller';
import { ModelsController } from './models.controller';
import { OpenAIResponder } from './openai-responder';
import { TokenizeController } from './tokenize.controller';

@Module({
  imports: [GenerationModule, WorkersModule],
  controllers: [CompletionsController, ModelsController, TokenizeController],
  providers: [OpenAIResponder],
})
export class OpenAIModule {}

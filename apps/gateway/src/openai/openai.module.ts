import { Module } from '@nestjs/common';
import { GenerationModule } from '../generation/generation.module';
import { WorkersModule } from '../workers/workers.module';
import { CompletionsController } from './completions.controller';
import { ModelsController } from './models.controller';
import { OpenAIResponder } from './openai-responder';

@Module({
  imports: [GenerationModule, WorkersModule],
  controllers: [CompletionsController, ModelsController],
  providers: [OpenAIResponder],
})
export class OpenAIModule {}

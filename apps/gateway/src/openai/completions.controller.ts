/** POST /v1/completions and POST /v1/chat/completions. */
import { Body, Controller, HttpCode, Inject, Post, Res } from '@nestjs/common';
import type { Response } from 'express';
import { OpenAIResponder } from './openai-responder';
import { parseChatRequest, parseCompletionRequest } from './request-validation';
import { WorkersService } from '../workers/workers.service';

@Controller('v1')
export class CompletionsController {
  constructor(
    @Inject(OpenAIResponder) private readonly responder: OpenAIResponder,
    @Inject(WorkersService) private readonly workers: WorkersService,
  ) {}

  @Post('completions')
  @HttpCode(200)
  async completions(@Body() body: unknown, @Res() res: Response): Promise<void> {
    await this.responder.respond('completions', parseCompletionRequest(body, (model) => this.maxModelLen(model)), res);
  }

  @Post('chat/completions')
  @HttpCode(200)
  async chat(@Body() body: unknown, @Res() res: Response): Promise<void> {
    const req = parseChatRequest(
      body,
      (model) => this.workers.toolSupport(model),
      (model) => this.maxModelLen(model),
    );
    await this.responder.respond('chat.completions', req, res);
  }

  /** The served model's length (WorkersService.maxModelLen; undefined, not a 503, when no worker is ready). */
  private maxModelLen(model: string): number | undefined {
    return this.workers.maxModelLen(model);
  }
}

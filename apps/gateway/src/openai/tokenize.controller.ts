/**
 * POST /tokenize and POST /detokenize (vLLM's shapes, tokenize-request.ts) through the serving worker
 * (tokenizer-calls.ts). An unknown model is 404 `model_not_found`, bad input 400, a token id outside the
 * vocabulary 400 naming `tokens`. A client that disconnects first has the worker call cancelled.
 */
import { Body, Controller, HttpCode, Inject, Post, Res } from '@nestjs/common';
import type { Response } from 'express';
import { WorkersService } from '../workers/workers.service';
import { type CallLimits, TokenizerCalls } from './tokenizer-calls';
import { parseDetokenizeRequest, parseTokenizeRequest, tokenizeResponse } from './tokenize-request';

/** Aborted when the response closes before it was sent (the client disconnected), also if it already has. */
export function untilClosed(res: Response): CallLimits {
  const left = new AbortController();
  const onClose = (): void => {
    if (!res.writableFinished) left.abort();
  };
  res.once('close', onClose);
  if (res.closed || res.destroyed) onClose();
  return { signal: left.signal };
}

@Controller()
export class TokenizeController {
  private readonly calls: TokenizerCalls;

  constructor(@Inject(WorkersService) private readonly workers: WorkersService) {
    this.calls = new TokenizerCalls(workers);
  }

  @Post('tokenize')
  @HttpCode(200)
  async tokenize(@Body() body: unknown, @Res({ passthrough: true }) res: Response) {
    const req = parseTokenizeRequest(body, (model) => this.workers.toolSupport(this.calls.modelOrBase(model)));
    return tokenizeResponse(await this.calls.tokenize(req, untilClosed(res)), req.returnTokenStrs);
  }

  @Post('detokenize')
  @HttpCode(200)
  async detokenize(@Body() body: unknown, @Res({ passthrough: true }) res: Response) {
    const out = await this.calls.detokenize(parseDetokenizeRequest(body), untilClosed(res));
    return { prompt: out.prompt };
  }
}

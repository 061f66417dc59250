/**
 * POST /tokenize and POST /detokenize (vLLM's shapes, tokenize-request.ts) through the serving worker
 * (tokenizer-calls.ts). An unknown model is 404 `model_not_found`, bad input 400, a token id outside the
 * vocabulary 400 naming `tokens`. A client that disconnects first has the worker call cancelled.
 */
import { Body, Controller, HttpCode, Inject, Post, Res } from '@nestjs/common';
import type { Response } from 'express';
import { WorkersService } from '../workers/workers.service';
import { earlyClose } from './early-close';
import { type CallLimits, TokenizerCalls } from './tokenizer-calls';
import { parseDetokenizeRequest, parseTokenizeRequest, tokenizeResponse } from './tokenize-request';

/** The worker call ends with the client's disconnect. */
const untilClosed = (res: Response): CallLimits => ({ signal: earlyClose(res).signal });

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

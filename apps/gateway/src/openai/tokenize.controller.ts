/**
 * POST /tokenize and POST /detokenize (vLLM's shapes, tokenize-request.ts) through the serving worker
 * (tokenizer-calls.ts). An unknown model is 404 `model_not_found`, bad input 400, a token id outside the
 * vocabulary 400 naming `tokens`.
 */
import { Body, Controller, HttpCode, Inject, Post } from '@nestjs/common';
import { WorkersService } from '../workers/workers.service';
import { TokenizerCalls } from './tokenizer-calls';
import { parseDetokenizeRequest, parseTokenizeRequest, tokenizeResponse } from './tokenize-request';

@Controller()
export class TokenizeController {
  private readonly calls: TokenizerCalls;

  constructor(@Inject(WorkersService) private readonly workers: WorkersService) {
    this.calls = new TokenizerCalls(workers);
  }

  @Post('tokenize')
  @HttpCode(200)
  async tokenize(@Body() body: unknown) {
    const req = parseTokenizeRequest(body, (model) => this.workers.toolSupport(this.calls.modelOrBase(model)));
    return tokenizeResponse(await this.calls.tokenize(req), req.returnTokenStrs);
  }

  @Post('detokenize')
  @HttpCode(200)
  async detokenize(@Body() body: unknown) {
    const res = await this.calls.detokenize(parseDetokenizeRequest(body));
    return { prompt: res.prompt };
  }
}

/** Renders every HTTP error in OpenAI's shape: `{"error":{"message","type","param","code"}}`. */
import { status } from '@grpc/grpc-js';
import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Response } from 'express';
import { grpcStatusOfHttp, toOpenAIError } from '../common/http-mapping';
import { InlaidError } from '../common/inlaid-error';

export function toInlaidError(err: unknown): InlaidError {
  if (err instanceof InlaidError) return err;
  if (err instanceof HttpException) {
    const body = err.getResponse();
    const message =
      typeof body === 'object' && body !== null && 'message' in body ? String((body as { message: unknown }).message) : err.message;
    return new InlaidError(grpcStatusOfHttp(err.getStatus()), message);
  }
  return new InlaidError(status.INTERNAL, 'The server had an error while processing your request.');
}

@Catch()
export class OpenAIErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger('Errors');

  catch(err: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    const error = toInlaidError(err);
    if (!(err instanceof InlaidError) && !(err instanceof HttpException)) this.logger.error(err);
    if (res.headersSent) {
      res.end();
      return;
    }
    const { httpStatus, body } = toOpenAIError(error);
    res.status(httpStatus).json(body);
  }
}

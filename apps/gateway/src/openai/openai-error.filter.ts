/** Renders every HTTP error in OpenAI's shape: `{"error":{"message","type","param","code"}}`. */
import { status } from '@grpc/grpc-js';
import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Response } from 'express';
import { grpcStatusOfHttp, toOpenAIError } from '../common/http-mapping';
import { INTERNAL_ERROR_MESSAGE, InlaidError, InlaidErrorDetails } from '../common/inlaid-error';

function httpOverride(httpStatus: number): InlaidErrorDetails {
  return httpStatus === 413 ? { httpStatus, code: 'request_too_large' } : {};
}

/** http-errors raised by express middleware (body-parser: 413 entity.too.large, 400 bad encoding). */
function clientHttpError(err: unknown): { status: number; message: string } | null {
  const e = err as { status?: unknown; expose?: unknown; message?: unknown } | null;
  if (typeof e !== 'object' || e === null || e.expose !== true || typeof e.status !== 'number') return null;
  if (e.status < 400 || e.status > 499) return null;
  return { status: e.status, message: e.status === 413 ? 'The request body is too large.' : String(e.message) };
}

export function toInlaidError(err: unknown): InlaidError {
  if (err instanceof InlaidError) return err;
  if (err instanceof HttpException) {
    const body = err.getResponse();
    const message =
      typeof body === 'object' && body !== null && 'message' in body ? String((body as { message: unknown }).message) : err.message;
    return new InlaidError(grpcStatusOfHttp(err.getStatus()), message, httpOverride(err.getStatus()));
  }
  const client = clientHttpError(err);
  if (client !== null) return new InlaidError(grpcStatusOfHttp(client.status), client.message, httpOverride(client.status));
  return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
}

@Catch()
export class OpenAIErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger('Errors');

  catch(err: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    const error = toInlaidError(err);
    if (error.status === status.INTERNAL && !(err instanceof InlaidError)) this.logger.error(err);
    if (res.headersSent) {
      res.end();
      return;
    }
    const { httpStatus, body } = toOpenAIError(error);
    if (error.details.retryAfterS !== undefined) res.setHeader('Retry-After', String(error.details.retryAfterS));
    res.status(httpStatus).json(body);
  }
}

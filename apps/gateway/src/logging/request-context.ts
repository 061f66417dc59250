/**
 * The HTTP request id: `x-request-id` from the client when it is a sane token, else a new `req-<uuid>`;
 * echoed on the response and kept in an AsyncLocalStorage for the rest of the request (so the per-request
 * log line can name it). The id sent to the worker in Admit is the generation id (cmpl-…, chatcmpl-…, or
 * "<principal id>/<request_id>" for a gRPC caller's request_id); the gateway's request log line carries both.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

export const REQUEST_ID_HEADER = 'x-request-id';
/** A client-chosen request id (HTTP header or gRPC field): a plain token, stored in Postgres and sent to workers. */
export const SANE_ID = /^[A-Za-z0-9._:/-]{1,128}$/;

export interface RequestContext {
  readonly httpRequestId: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

export function currentRequestContext(): RequestContext | undefined {
  return storage.getStore();
}

export function chooseRequestId(header: string | string[] | undefined, fresh: () => string = () => `req-${randomUUID()}`): string {
  const value = Array.isArray(header) ? header[0] : header;
  return value !== undefined && SANE_ID.test(value) ? value : fresh();
}

export function requestIdMiddleware(req: Request, res: Response, next: NextFunction): void {
  const httpRequestId = chooseRequestId(req.headers[REQUEST_ID_HEADER]);
  res.setHeader(REQUEST_ID_HEADER, httpRequestId);
  storage.run({ httpRequestId }, next);
}

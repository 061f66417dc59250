/**
 * Upload size limit of the task API (POST /v1/tasks multipart, POST /v1/files): every uploaded file is at most
 * INLAID_MAX_UPLOAD_BYTES. Multer (memory storage, nothing touches the disk) stops reading at the limit; the
 * interceptor turns its bare "File too large" into a 413 that names the limit.
 */
import { status } from '@grpc/grpc-js';
import { CallHandler, ExecutionContext, Inject, Injectable, NestInterceptor, PayloadTooLargeException } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { catchError, Observable, throwError } from 'rxjs';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';

/**
 * Multer options (module-wide for the task controller); 3 files at most: adapter config, weights, calibration.
 * Text fields are bounded too (busboy leaves their count unlimited): POST /v1/tasks has 5 (name, adapter, slo,
 * calibration, wait_for_quantization), POST /v1/files 1 (purpose); a field holds at most 64 KiB (send larger
 * calibration data as a file).
 */
export const MAX_UPLOAD_FIELDS = 16;
export const MAX_UPLOAD_PARTS = 24;
export const MAX_UPLOAD_FIELD_BYTES = 64 * 1024;

export function uploadLimits(maxBytes: number): { limits: { fileSize: number; files: number; fields: number; parts: number; fieldSize: number } } {
  return { limits: { fileSize: maxBytes, files: 3, fields: MAX_UPLOAD_FIELDS, parts: MAX_UPLOAD_PARTS, fieldSize: MAX_UPLOAD_FIELD_BYTES } };
}

export function uploadTooLarge(maxBytes: number): InlaidError {
  return new InlaidError(status.INVALID_ARGUMENT, `An uploaded file is larger than the limit of ${maxBytes} bytes (INLAID_MAX_UPLOAD_BYTES).`, {
    code: 'request_too_large',
    httpStatus: 413,
  });
}

@Injectable()
export class UploadTooLargeInterceptor implements NestInterceptor {
  constructor(@Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig) {}

  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      catchError((err: unknown) => throwError(() => (err instanceof PayloadTooLargeException ? uploadTooLarge(this.config.tasks.maxUploadBytes) : err))),
    );
  }
}

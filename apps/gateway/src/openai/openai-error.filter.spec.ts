import { status } from '@grpc/grpc-js';
import { BadRequestException, NotFoundException, PayloadTooLargeException } from '@nestjs/common';
import { InlaidError } from '../common/inlaid-error';
import { toInlaidError } from './openai-error.filter';
import { modelObject } from './models.controller';

describe('toInlaidError', () => {
  it('keeps InlaidErrors and maps framework HTTP errors by status', () => {
    const own = InlaidError.invalid('x', 'top_p');
    expect(toInlaidError(own)).toBe(own);
    expect(toInlaidError(new BadRequestException('Unexpected token')).status).toBe(status.INVALID_ARGUMENT);
    expect(toInlaidError(new BadRequestException('Unexpected token')).message).toBe('Unexpected token');
    expect(toInlaidError(new PayloadTooLargeException()).status).toBe(status.INVALID_ARGUMENT);
    expect(toInlaidError(new PayloadTooLargeException()).details.httpStatus).toBe(413);
    expect(toInlaidError(new NotFoundException('Cannot GET /x')).status).toBe(status.NOT_FOUND);
  });

  it('hides the message of unexpected errors', () => {
    const err = toInlaidError(new TypeError('secret internals'));
    expect(err.status).toBe(status.INTERNAL);
    expect(err.message).not.toContain('secret');
  });
});

describe('modelObject', () => {
  it('gives adapters a parent and the base none', () => {
    const base = modelObject({ id: 'smollm2', parent: '', rank: 0, targetModules: [], maxModelLen: 2048 });
    const task = modelObject({ id: 'sql', parent: 'smollm2', rank: 8, targetModules: ['q_proj'], maxModelLen: 2048 });
    expect(base).toMatchObject({ id: 'smollm2', object: 'model', parent: null, root: 'smollm2' });
    expect('lora_rank' in base).toBe(false);
    expect(task).toMatchObject({ id: 'sql', parent: 'smollm2', root: 'smollm2', lora_rank: 8, target_modules: ['q_proj'] });
  });
});

describe('toInlaidError for express middleware errors', () => {
  it('keeps a body-parser 413 as 413 and never exposes 5xx internals', () => {
    const tooLarge = Object.assign(new Error('request entity too large'), { status: 413, expose: true, type: 'entity.too.large' });
    expect(toInlaidError(tooLarge).details.httpStatus).toBe(413);
    const internal = Object.assign(new Error('db password=x'), { status: 500, expose: false });
    expect(toInlaidError(internal).message).not.toContain('password');
  });
});

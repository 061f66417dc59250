/**
 * GET /v1/models/{id} over a real Nest HTTP app (the workers are a stub): a base model's id has a slash
 * (`HuggingFaceTB/SmolLM2-135M-Instruct`), which a plain `:id` route segment does not match.
 */
import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { common } from '@inlaid/proto';
import type { AddressInfo } from 'node:net';
import { WorkersService } from '../workers/workers.service';
import { ModelsController } from './models.controller';
import { OpenAIErrorFilter } from './openai-error.filter';

const BASE = 'HuggingFaceTB/SmolLM2-135M-Instruct';
const card = (id: string, parent = ''): common.ModelCard => ({ id, parent, maxModelLen: 8192, rank: 8, targetModules: ['q_proj'] }) as common.ModelCard;

describe('ModelsController over HTTP', () => {
  let app: INestApplication;
  let url: string;

  beforeAll(async () => {
    const workers = { listModels: () => [card(BASE), card('sql', BASE)] };
    const moduleRef = await Test.createTestingModule({
      controllers: [ModelsController],
      providers: [{ provide: WorkersService, useValue: workers }],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    app.useGlobalFilters(new OpenAIErrorFilter());
    await app.listen(0, '127.0.0.1');
    url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await app?.close();
  });

  const get = async (path: string) => {
    const res = await fetch(`${url}${path}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it.each([`/v1/models/${BASE}`, '/v1/models/HuggingFaceTB%2FSmolLM2-135M-Instruct'])('retrieves the base model by its id with a slash (%s)', async (path) => {
    const r = await get(path);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: BASE, object: 'model', parent: null, root: BASE });
  });

  it.each(['/v1/models/sql/', `/v1/models/${BASE}/`])('retrieves a model with a trailing slash (%s), as the old :id route did', async (path) => {
    const r = await get(path);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: path.slice('/v1/models/'.length, -1) });
  });

  it('retrieves an adapter', async () => {
    const r = await get('/v1/models/sql');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: 'sql', parent: BASE });
  });

  it('lists the models', async () => {
    const r = await get('/v1/models');
    expect(r.status).toBe(200);
    expect((r.body['data'] as Array<{ id: string }>).map((m) => m.id)).toEqual([BASE, 'sql']);
  });

  it.each(['/v1/models/nope', '/v1/models/HuggingFaceTB/nope', '/v1/models/sql/extra'])('gives an OpenAI 404 for an unknown id (%s)', async (path) => {
    const r = await get(path);
    expect(r.status).toBe(404);
    expect(r.body['error']).toMatchObject({ param: 'model', code: 'model_not_found' });
  });
});

/** Storing uploaded adapter files and calibration data under the data dir (checks are pure and up front). */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InlaidError } from '../common/inlaid-error';

export interface UploadedFile {
  readonly fieldname: string;
  readonly originalname: string;
  readonly size: number;
  readonly buffer: Buffer;
}

export type UploadedFiles = Partial<Record<string, UploadedFile[]>>;

/** A safetensors file starts with an 8-byte little-endian header length and a JSON header; pickles do not. */
export function checkSafetensors(buf: Buffer, param: string): void {
  if (buf.length < 10) throw InlaidError.invalid(`\`${param}\` is too small to be a safetensors file`, param);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (buf[0] === 0x80 || buf[8] !== 0x7b || headerLen + 8 > buf.length) {
    throw InlaidError.invalid(`\`${param}\` is not a safetensors file (pickled weights are refused: they can run code)`, param);
  }
}

export interface AdapterUpload {
  readonly config: UploadedFile;
  readonly model: UploadedFile;
}

/** Both adapter files, or none (null); only one of them is a malformed request. */
export function pickAdapterFiles(files: UploadedFiles): AdapterUpload | null {
  const config = files['adapter_config']?.[0];
  const model = files['adapter_model']?.[0];
  if (config === undefined && model === undefined) return null;
  if (config === undefined || model === undefined) {
    throw InlaidError.invalid('upload both `adapter_config` (adapter_config.json) and `adapter_model` (adapter_model.safetensors)', config === undefined ? 'adapter_config' : 'adapter_model');
  }
  return { config, model };
}

/** What the gateway can check of an uploaded adapter itself: the config is JSON, the weights safetensors. */
export function checkAdapterFiles(upload: AdapterUpload): AdapterUpload {
  try {
    JSON.parse(upload.config.buffer.toString('utf8'));
  } catch {
    throw InlaidError.invalid('`adapter_config` is not JSON', 'adapter_config');
  }
  checkSafetensors(upload.model.buffer, 'adapter_model');
  return upload;
}

export async function writeAdapter(dir: string, files: AdapterUpload): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'adapter_config.json'), files.config.buffer);
  await writeFile(join(dir, 'adapter_model.safetensors'), files.model.buffer);
  return dir;
}

export async function writeText(path: string, text: string): Promise<string> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, text, 'utf8');
  return path;
}

export function newFileId(): string {
  return `file-${randomBytes(12).toString('hex')}`;
}

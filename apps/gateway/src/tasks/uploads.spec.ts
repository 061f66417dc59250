import { toOpenAIError } from '../common/http-mapping';
import { InlaidError } from '../common/inlaid-error';
import { checkCalibration, MAX_CALIBRATION_LINES, MAX_CALIBRATION_TOTAL_LINES } from './calibration';
import { uploadLimits, uploadTooLarge } from './upload-limits';
import { checkAdapterFiles, checkSafetensors, pickAdapterFiles, UploadedFile } from './uploads';

function file(fieldname: string, buffer: Buffer): UploadedFile {
  return { fieldname, originalname: `${fieldname}.bin`, size: buffer.length, buffer };
}

/** A minimal valid safetensors file: 8-byte little-endian header length, then a JSON header. */
function safetensors(): Buffer {
  const header = Buffer.from('{"__metadata__":{}}');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([len, header]);
}

function errorOf(fn: () => unknown): InlaidError {
  try {
    fn();
  } catch (err) {
    return err as InlaidError;
  }
  throw new Error('no error');
}

describe('adapter uploads', () => {
  const config = file('adapter_config', Buffer.from('{"r": 4}'));

  it('takes both files or none; one alone names the missing field', () => {
    expect(pickAdapterFiles({})).toBeNull();
    expect(errorOf(() => pickAdapterFiles({ adapter_config: [config] })).details.param).toBe('adapter_model');
    expect(pickAdapterFiles({ adapter_config: [config], adapter_model: [file('adapter_model', safetensors())] })).not.toBeNull();
  });

  it('refuses a pickle or a non-JSON config', () => {
    expect(() => checkSafetensors(Buffer.from([0x80, 0x02, 0x7d, 0x71, 0, 0, 0, 0, 0, 0, 0]), 'adapter_model')).toThrow('pickled weights are refused');
    expect(() => checkAdapterFiles({ config, model: file('adapter_model', Buffer.from('PK\x03\x04 zip archive of torch.save')) })).toThrow('not a safetensors file');
    expect(errorOf(() => checkAdapterFiles({ config: file('adapter_config', Buffer.from('nope')), model: file('adapter_model', safetensors()) })).details.param).toBe('adapter_config');
    expect(() => checkAdapterFiles({ config, model: file('adapter_model', safetensors()) })).not.toThrow();
  });
});

describe('size limits', () => {
  it('multer gets the configured per-file limit; going over it is a 413 naming INLAID_MAX_UPLOAD_BYTES', () => {
    expect(uploadLimits(1234)).toEqual({ limits: { fileSize: 1234, files: 3, fields: 16, parts: 24, fieldSize: 64 * 1024 } });
    const { httpStatus, body } = toOpenAIError(uploadTooLarge(1234));
    expect(httpStatus).toBe(413);
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code: 'request_too_large' });
    expect(body.error.message).toContain('1234 bytes (INLAID_MAX_UPLOAD_BYTES)');
  });

  it('calibration data over the record cap is a 413 naming the field; at the cap it passes', () => {
    const records = (n: number) => '{"text":"a"}\n'.repeat(n);
    expect(checkCalibration(records(MAX_CALIBRATION_LINES), 'file')).toBe(MAX_CALIBRATION_LINES);
    const err = errorOf(() => checkCalibration(`${records(MAX_CALIBRATION_LINES + 1)}not json`, 'file'));
    expect(err.message).toContain(`more than ${MAX_CALIBRATION_LINES} records`); // stops at the cap, before the bad line
    expect(toOpenAIError(err)).toMatchObject({ httpStatus: 413, body: { error: { param: 'file', code: 'request_too_large' } } });
  });

  it('blank lines count toward a line cap: a file of only newlines is a 413, not a giant array', () => {
    const err = errorOf(() => checkCalibration('\n'.repeat(MAX_CALIBRATION_TOTAL_LINES + 1), 'calibration_file'));
    expect(err.message).toContain(`more than ${MAX_CALIBRATION_TOTAL_LINES} lines`);
    expect(toOpenAIError(err)).toMatchObject({ httpStatus: 413, body: { error: { param: 'calibration_file', code: 'request_too_large' } } });
    // at the cap (a trailing newline included) it is still read: blank lines, then records, line numbers as before
    const padded = `${'\n'.repeat(MAX_CALIBRATION_TOTAL_LINES - 1)}{"text":"a"}\n`;
    expect(checkCalibration(padded)).toBe(1);
    expect(checkCalibration(' \r\n{"text":"a"}\r\n\n{"messages":[]}')).toBe(2);
    expect(errorOf(() => checkCalibration('{"text":"a"}\n\n  \n{"nope":1}')).message).toContain('line 4: expected');
    expect(errorOf(() => checkCalibration('\n\n')).message).toContain('is empty');
  });
});

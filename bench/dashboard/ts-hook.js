/**
 * Lets plain `node` run the bench's TypeScript (and the gateway/lib sources it imports) without a build:
 * transpiles .ts on require with the repo's compiler options and maps `@inlaid/<name>` to libs/<name>/src.
 * Type checking is left to `tsc`; this only strips types.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');
const ts = require('typescript');

const root = path.join(__dirname, '..', '..');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  const m = /^@inlaid\/([^/]+)$/.exec(request);
  return resolve.call(this, m ? path.join(root, 'libs', m[1], 'src') : request, parent, ...rest);
};
require.extensions['.ts'] = function (module, filename) {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, esModuleInterop: true,
      experimentalDecorators: true, emitDecoratorMetadata: true,
    },
  });
  module._compile(out.outputText, filename);
};

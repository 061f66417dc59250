/**
 * Entry point for the TypeORM CLI, e.g.
 * `npx typeorm migration:run -d libs/db/dist/cli-data-source.js` (or `migration:revert`).
 */
import { parseConfig } from '@inlaid/config';
import { createDataSource } from './data-source';

export default createDataSource(parseConfig(process.env).databaseUrl);

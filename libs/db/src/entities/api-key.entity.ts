/** An API key: only its sha256 hash and a short display prefix are stored; the key itself is shown once. */
import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

export const API_KEY_SCOPES = ['inference', 'tasks:admin', 'dashboard:read'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

@Entity({ name: 'api_keys' })
export class ApiKey {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text' })
  name!: string;

  /** Hex sha256 of the whole key (the key carries 32 random bytes, so no salt or slow hash is needed). */
  @Index('idx_api_keys_hash', { unique: true })
  @Column({ type: 'text' })
  hash!: string;

  /** The first characters of the key, enough to tell keys apart in listings and logs. */
  @Column({ type: 'text' })
  prefix!: string;

  @Column({ type: 'text', array: true, default: '{}' })
  scopes!: ApiKeyScope[];

  /** Requests per minute; null means unlimited. */
  @Column({ name: 'rate_limit_rpm', type: 'integer', nullable: true })
  rateLimitRpm!: number | null;

  /** Requests in flight at once; null means unlimited. */
  @Column({ name: 'concurrency_limit', type: 'integer', nullable: true })
  concurrencyLimit!: number | null;

  @Column({ name: 'created_at', type: 'timestamptz', default: () => 'now()' })
  createdAt!: Date;

  @Column({ name: 'revoked_at', type: 'timestamptz', nullable: true })
  revokedAt!: Date | null;
}

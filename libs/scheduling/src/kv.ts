/** KV-cache arithmetic in blocks (a request's KV holds one entry per context token). */
export function blocksFor(tokens: number, blockSize: number): number {
  return Math.ceil(Math.max(0, tokens) / blockSize);
}

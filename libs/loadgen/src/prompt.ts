/** Synthetic prompt text of about N tokens, for trace records without a prompt. */

/** " hello" is one token in Llama/SmolLM2-style BPE vocabularies, so N repeats give about N tokens. */
export function syntheticPrompt(tokens: number): string {
  if (!Number.isInteger(tokens) || tokens < 1) throw new Error(`prompt tokens must be a positive integer, got ${tokens}`);
  return 'hello'.concat(' hello'.repeat(tokens - 1));
}

import { JsonScan } from './json-scan';

function scan(text: string): JsonScan {
  const s = new JsonScan();
  for (const c of text) s.step(c);
  return s;
}

describe('JsonScan', () => {
  it('counts nesting outside strings only', () => {
    expect(scan('{"a": [1, {"b": "}]"}').depth).toBe(2);
    expect(scan('{"a": [1, {"b": "}]"}]}').depth).toBe(0);
  });

  it('honours escapes inside strings', () => {
    const s = scan('{"a": "x\\"}');
    expect(s.inString).toBe(true);
    expect(s.depth).toBe(1);
    s.step('"');
    expect(s.inString).toBe(false);
    s.step('}');
    expect(s.depth).toBe(0);
  });

  it('resets', () => {
    const s = scan('{"a": "\\');
    s.reset();
    s.step('"');
    expect(s.inString).toBe(true); // the escape before the reset is forgotten
  });
});

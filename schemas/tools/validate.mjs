// Parse an AsyncAPI document with the AsyncAPI project's own parser and fail on any error diagnostic.
// Usage: node validate.mjs <asyncapi.yaml>. Warnings are printed but do not fail: they are style advice.
import { resolve } from 'node:path';
import { fromFile, Parser, DiagnosticSeverity } from '@asyncapi/parser';

const file = resolve(process.argv[2] ?? '../asyncapi.yaml');
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();
const name = (severity) => Object.keys(DiagnosticSeverity).find((k) => DiagnosticSeverity[k] === severity);
for (const d of diagnostics) {
  const where = (d.path ?? []).join('.') || '(root)';
  console.log(`${name(d.severity)} ${d.code} at ${where}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (errors.length > 0 || document === undefined) {
  console.log(`FAILED: ${errors.length} error(s) in ${file}`);
  process.exit(1);
}
console.log(`OK: ${file} is AsyncAPI ${document.version()} with ${document.channels().length} channel(s)`);

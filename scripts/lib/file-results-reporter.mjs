// A node:test reporter that records, per test file, how many tests passed, failed and were
// skipped and when the file started and ended (wall clock, as the runner saw it). It writes one
// JSON object {file: {passed, failed, skipped, startMs, endMs}} when the run ends; run-tests.mjs
// adds it next to the spec reporter to report the unit phase's groups.

/**
 * @param {AsyncIterable<{ type: string, data: any }>} source
 * @returns {AsyncGenerator<string>}
 */
export default async function* fileResults(source) {
  /** @type {Record<string, { passed: number, failed: number, skipped: number, startMs: number, endMs: number }>} */
  const files = {};
  const entry = (/** @type {string} */ file) =>
    (files[file] ??= { passed: 0, failed: 0, skipped: 0, startMs: Date.now(), endMs: Date.now() });
  for await (const { type, data } of source) {
    const file = data?.file;
    if (typeof file !== 'string') continue;
    const e = entry(file);
    e.endMs = Date.now();
    // The runner names a whole file's own test after the file. Its dequeue is when the file's
    // process starts (all files are enqueued at once); it counts as a test only when the file
    // itself failed (did not load, crashed), as node's own totals do.
    const isFile = data.name === file;
    if (isFile && type === 'test:dequeue') e.startMs = Date.now();
    if (type === 'test:pass' && !isFile) {
      if (data.skip !== undefined || data.todo !== undefined) e.skipped++;
      else e.passed++;
    } else if (type === 'test:fail' && (!isFile || data.details?.error?.failureType !== 'subtestsFailed'))
      e.failed++;
  }
  yield JSON.stringify(files) + '\n';
}

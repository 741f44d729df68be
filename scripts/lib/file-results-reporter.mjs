// A node:test reporter that records, per test file, how many tests passed, failed and were
// skipped, and how long the file's process ran. It writes one JSON object
// {file: {passed, failed, skipped, ms}} when the run ends; run-tests.mjs adds it next to the spec
// reporter to report the unit phase's groups.

/**
 * @param {AsyncIterable<{ type: string, data: any }>} source
 * @returns {AsyncGenerator<string>}
 */
export default async function* fileResults(source) {
  /** @type {Record<string, { passed: number, failed: number, skipped: number, ms: number }>} */
  const files = {};
  for await (const { type, data } of source) {
    const file = data?.file;
    if (typeof file !== 'string') continue;
    const e = (files[file] ??= { passed: 0, failed: 0, skipped: 0, ms: 0 });
    // The runner names a whole file's own test after the file. Its test:complete comes when the
    // file's process ends, with the process's run time (pass/fail events are replayed later, in
    // file order, so their arrival times say nothing). It counts as a test only when the file
    // itself failed (did not load, crashed), as node's own totals do.
    const isFile = data.name === file;
    if (isFile && type === 'test:complete') e.ms = data.details?.duration_ms ?? 0;
    else if (type === 'test:pass' && !isFile) {
      if (data.skip !== undefined || data.todo !== undefined) e.skipped++;
      else e.passed++;
    } else if (type === 'test:fail' && (!isFile || data.details?.error?.failureType !== 'subtestsFailed'))
      e.failed++;
  }
  yield JSON.stringify(files) + '\n';
}

// The unit phase's test groups: a compiled test file's group is the suffix before `.test.js`
// (`x.qemu.test.js` → qemu); a file without one of these suffixes is a fast unit test.

/** The groups, in the order run-tests.mjs reports them. */
export const UNIT_GROUPS = ['fast', 'qemu', 'fault', 'load', 'fuzz', 'pw'];

/** @param {string} file */
export const groupOf = (file) => /\.(qemu|fault|load|fuzz|pw)\.test\.js$/.exec(file)?.[1] ?? 'fast';

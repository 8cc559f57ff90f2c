// Guards the check itself: were DOM types to reach this project (a `/// <reference lib="dom" />`
// in the package's declarations), these lines would no longer be errors, and tsc would fail.
// @ts-expect-error no DOM in a Node-only project
export const page = document;
// @ts-expect-error no DOM in a Node-only project
export type Source = BufferSource;

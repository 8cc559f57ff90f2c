// The types of checks.mjs, for the TypeScript apps: `api` is the package as TypeScript sees
// it, so passing the imported module also checks that its declarations match what the
// checks use.
type Api = typeof import("llm-distiller");
export function runChecks(api: Api, baseUrl: string): Promise<unknown>;
export function runInPage(api: Api): void;
export function runInNode(api: Api): Promise<void>;

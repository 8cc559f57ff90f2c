#!/usr/bin/env bash
# Builds the npm package into pkg/: wasm-pack (target web, feature js), wasm-opt from
# npm's binaryen (wasm-pack's own download of binaryen cannot work offline), and the
# package's entries, declarations and manifest from js/ (js/package.json's "exports" says
# which entry each runtime gets). Prints the sizes, the package's among them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

profile="${1:-release}"
wasm-pack build --target web --out-dir pkg --"$profile" --no-pack -- --features js

wasm_opt=node_modules/.bin/wasm-opt
if [ ! -x "$wasm_opt" ]; then
  echo "build-pkg: $wasm_opt is missing: run scripts/setup.sh --node" >&2
  exit 1
fi
# The features rustc enables for wasm32-unknown-unknown by default; wasm-opt must accept them.
"$wasm_opt" pkg/llm_distiller_bg.wasm -o pkg/llm_distiller_bg.wasm -Oz --converge \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue

# wasm-bindgen's own loader falls back to `new URL("llm_distiller_bg.wasm", import.meta.url)`
# when called without a module. No entry calls it so, but bundlers see the expression: esbuild
# warns that `import.meta` is empty in its default format, and Vite and webpack would emit the
# wasm a second time. The fallback becomes an error (checked: exactly one line changes).
glue=pkg/llm_distiller.js
fallback="module_or_path = new URL('llm_distiller_bg.wasm', import.meta.url);"
if [ "$(grep -cF "$fallback" "$glue")" != 1 ]; then
  echo "build-pkg: wasm-bindgen's loader changed: '$fallback' is not in $glue once" >&2
  exit 1
fi
sed -i "s|$fallback|throw new Error('llm-distiller: the package entry loads the wasm');|" "$glue"

# The declarations of the API: wasm-bindgen's (the types tsify derives from the Rust types,
# then src/js/types.d.ts), without its loader (`InitInput` to the end: initSync, init and
# their types name DOM types that a Node-only project does not have). Rustdoc's links
# ([`RateLimiter::reserve`]) read as plain code there.
loader_types='export type InitInput'
if ! grep -q "^$loader_types" pkg/llm_distiller.d.ts; then
  echo "build-pkg: wasm-bindgen's declarations changed: no '$loader_types' in pkg/llm_distiller.d.ts" >&2
  exit 1
fi
sed -e "/^$loader_types/,\$d" -e 's/\[\(`[^`]*`\)\]/\1/g' pkg/llm_distiller.d.ts > pkg/api.d.ts
rm -f pkg/llm_distiller.d.ts pkg/llm_distiller_bg.wasm.d.ts pkg/index.js

# The wasm inside JavaScript, for the entry that needs no bundler support (embedded.js).
{
  printf '// The bytes of llm_distiller_bg.wasm in base64, for embedded.js (written by scripts/build-pkg.sh).\n'
  printf 'export default "%s";\n' "$(base64 -w 0 pkg/llm_distiller_bg.wasm)"
} > pkg/wasm_base64.js

cp js/api.js js/node.js js/browser.js js/workerd.js js/embedded.js js/index.d.ts js/package.json pkg/
cp README.md pkg/README.md
rm -f pkg/.gitignore

gzipped() { cat "$@" | gzip -9 -c | wc -c; }
raw=$(wc -c < pkg/llm_distiller_bg.wasm)
snippets=$(find pkg/snippets -name '*.js' | sort)
echo "build-pkg: llm_distiller_bg.wasm $raw bytes, $(gzipped pkg/llm_distiller_bg.wasm) bytes gzipped"
# What an app loads besides the .wasm, entry by entry (the glue and snippets are shared).
for entry in node browser workerd; do
  # shellcheck disable=SC2086 # one path per line
  echo "build-pkg: $entry.js and the JS it imports: $(gzipped pkg/$entry.js pkg/api.js pkg/llm_distiller.js $snippets) bytes gzipped"
done
# shellcheck disable=SC2086
echo "build-pkg: embedded.js with the wasm inside: $(gzipped pkg/embedded.js pkg/wasm_base64.js pkg/api.js pkg/llm_distiller.js $snippets) bytes gzipped"
# The package as npm publishes it: the tarball (gzipped) and the files installed from it.
packed=$(npm pack ./pkg --dry-run --json --loglevel=error)
node -e '
  const [p] = JSON.parse(process.argv[1]);
  console.log(`build-pkg: package ${p.filename}: ${p.size} bytes packed (gzipped tarball), ${p.unpackedSize} bytes installed, ${p.entryCount} files`);
' "$packed"

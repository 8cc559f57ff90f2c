// The least a gateway does, for bench/worker.mjs to measure beside this project's Worker on
// the same dev server: a JavaScript Worker with no library, no auth and no parsing.
//   GET  /health                 200, touching nothing (its floor)
//   POST /forward                the body sent to the upstream's chat completions, its answer returned
//   POST /forward-and-store      the same, and the answer inserted in D1 after the response (waitUntil)
//   POST /setup                  creates the table the store writes
export default {
  async fetch(request, env, ctx) {
    const { pathname } = new URL(request.url);
    if (pathname === '/health') return new Response('ok');
    if (pathname === '/setup') {
      await env.DB.prepare('CREATE TABLE IF NOT EXISTS answers (id INTEGER PRIMARY KEY, body TEXT NOT NULL)').run();
      return new Response('ok');
    }
    if (pathname !== '/forward' && pathname !== '/forward-and-store') return new Response('not found', { status: 404 });
    const upstream = await fetch(`${env.UPSTREAM}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: await request.arrayBuffer(),
    });
    const body = await upstream.text();
    if (pathname === '/forward-and-store') {
      ctx.waitUntil(env.DB.prepare('INSERT INTO answers (body) VALUES (?1)').bind(body).run());
    }
    return new Response(body, { status: upstream.status, headers: { 'content-type': 'application/json' } });
  },
};

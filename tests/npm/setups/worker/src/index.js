import * as api from "llm-distiller";
import { runChecks } from "./checks.mjs";

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("ok");
    try {
      return Response.json(await runChecks(api, url.searchParams.get("base")));
    } catch (error) {
      return Response.json({ failed: `${error?.name}: ${error?.message}\n${error?.stack}` }, { status: 500 });
    }
  },
};

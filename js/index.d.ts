export * from "./llm_distiller.js";

import * as api from "llm-distiller";
import { runInPage } from "./checks.mjs";

runInPage(api);

// Compiles the Solidity sources under infra/contracts with solc-js and OpenZeppelin from node_modules,
// writing one artefact per contract ({abi, bytecode}) to the folder given as the first argument.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(new URL(import.meta.url).pathname);
const sourcesDir = path.resolve(here, "../../infra/contracts");
const out = path.resolve(process.argv[2] ?? path.join(here, "build"));

const sources = {};
for (const name of fs.readdirSync(sourcesDir).filter((f) => f.endsWith(".sol"))) {
  sources[name] = { content: fs.readFileSync(path.join(sourcesDir, name), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const findImports = (name) => {
  try {
    return { contents: fs.readFileSync(path.join(here, "node_modules", name), "utf8") };
  } catch {
    return { error: `not found: ${name}` };
  }
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
fs.mkdirSync(out, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, artefact] of Object.entries(contracts)) {
    const target = path.join(out, `${name}.json`);
    fs.writeFileSync(target, JSON.stringify({ abi: artefact.abi, bytecode: "0x" + artefact.evm.bytecode.object }));
    console.log(`${file}:${name} -> ${target}`);
  }
}

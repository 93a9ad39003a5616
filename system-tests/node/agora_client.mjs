// Agora through connect-es: connect-node's transport in JSON over HTTP/1.1, in
// binary over HTTP/2, and with reads (GetPost, ListPosts) as GET requests, and
// connect-web's over fetch (which Node has too), with
// code generated from proto/ by protoc-gen-es (`npm run generate`, into gen/).
//
// Usage: node agora_client.mjs http://HOST:PORT
//
// Prints one line per check (see checks.mjs) and then exactly one summary line,
// `connect-es client: N passed, M failed`; exits 0 only when all passed.

import { createConnectTransport } from "@connectrpc/connect-node";
import { createConnectTransport as createFetchTransport } from "@connectrpc/connect-web";

import { runChecks } from "./checks.mjs";

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: node agora_client.mjs http://HOST:PORT");
  process.exit(2);
}

const { passed, failed } = await runChecks(
  {
    "JSON over HTTP/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    "binary over HTTP/2": createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
    "reads as GET": createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true }),
    "connect-web over fetch": createFetchTransport({ baseUrl }),
  },
  console.log,
);
console.log(`connect-es client: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

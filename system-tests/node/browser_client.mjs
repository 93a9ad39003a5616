// Agora from a web page, through connect-web, in JSON and in binary: the page
// and the gateway are on different origins, so every call passes CORS.
// Bundled by `npm run bundle` into gen/browser_client.js, which browser.html
// loads; the gateway's URL is the page's `?gateway=` parameter. The checks'
// lines and the summary line (`connect-web in a browser: N passed, M failed`)
// are written into the page's <pre id="log">.

import { createConnectTransport } from "@connectrpc/connect-web";

import { runChecks } from "./checks.mjs";

const log = document.getElementById("log");
const print = (line) => {
  log.textContent += `${line}\n`;
};

const baseUrl = new URLSearchParams(location.search).get("gateway");
try {
  const { passed, failed } = await runChecks(
    {
      "connect-web, JSON": createConnectTransport({ baseUrl }),
      "connect-web, binary": createConnectTransport({ baseUrl, useBinaryFormat: true }),
      "connect-web, reads as GET": createConnectTransport({ baseUrl, useHttpGet: true }),
    },
    print,
  );
  print(`connect-web in a browser: ${passed} passed, ${failed} failed`);
} catch (error) {
  print(`connect-web in a browser: stopped: ${error}`);
}

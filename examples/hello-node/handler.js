// A Flint function in Node.js: an HTTP server the watchdog proxies to (mode=http).
// It listens on $PORT (local mode gives every replica its own; the default is 3000).
const http = require("http");

const port = Number(process.env.PORT || 3000);
http
  .createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const out = JSON.stringify({ greeting: "Hello from Node.js", method: req.method, path: req.url, body }) + "\n";
      res.writeHead(200, { "content-type": "application/json" });
      res.end(out);
    });
  })
  .listen(port, "127.0.0.1", () => console.log(`hello-node listening on ${port}`));

// hako: routes Node's http, https and fetch through the run's egress guard (HTTP_PROXY).
// Node 20 ignores proxy variables, so this file is loaded with --require before the
// program. Every connection becomes a CONNECT tunnel through the guard; TLS stays end to end.
'use strict';
(() => {
  const net = require('net');
  const tls = require('tls');
  const http = require('http');
  const https = require('https');
  let proxy;
  try {
    proxy = new URL(process.env.HTTP_PROXY || process.env.http_proxy || '');
  } catch {
    return;
  }
  const PROXY_HOST = proxy.hostname;
  const PROXY_PORT = Number(proxy.port) || 80;
  const bareHost = (h) => (h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h);

  // Opens a tunnel to host:port; callback(err, socket).
  function tunnel(host, port, callback) {
    const bare = bareHost(String(host));
    const authority = bare.includes(':') ? `[${bare}]:${port}` : `${bare}:${port}`;
    const socket = net.connect({ host: PROXY_HOST, port: PROXY_PORT });
    let data = Buffer.alloc(0);
    let status = 0;
    let done = false;
    const finish = (err, sock) => {
      if (done) return;
      done = true;
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
      if (err) socket.destroy();
      callback(err, sock);
    };
    const refused = () => {
      const end = data.indexOf('\r\n\r\n');
      const body = end >= 0 ? data.subarray(end + 4).toString('utf8').trim() : '';
      const err = new Error(body || `hako egress: the proxy answered ${status || 'nothing'} for ${authority}`);
      err.code = 'EHAKOEGRESS';
      err.statusCode = status;
      return err;
    };
    function onData(chunk) {
      data = Buffer.concat([data, chunk]);
      if (status) return;
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (data.length > 65536) finish(refused());
        return;
      }
      status = Number(data.toString('latin1', 0, data.indexOf('\r\n')).split(' ')[1]) || 502;
      if (status === 200) {
        const rest = data.subarray(end + 4);
        if (rest.length) socket.unshift(rest);
        finish(null, socket);
      }
      // Otherwise the guard sends its reason and closes: see onEnd.
    }
    function onError(err) {
      finish(err);
    }
    function onEnd() {
      finish(refused());
    }
    socket.on('connect', () => socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  }

  const isProxy = (o) => bareHost(String(o.host || o.hostname || '')) === PROXY_HOST && Number(o.port) === PROXY_PORT;

  const httpCreate = http.Agent.prototype.createConnection;
  http.Agent.prototype.createConnection = function createConnection(options, cb) {
    if (options.socketPath || isProxy(options) || typeof cb !== 'function') {
      return httpCreate.call(this, options, cb);
    }
    tunnel(options.host || options.hostname || 'localhost', options.port || 80, cb);
    return undefined;
  };

  const httpsCreate = https.Agent.prototype.createConnection;
  https.Agent.prototype.createConnection = function createConnection(options, cb) {
    if (options.socketPath || typeof cb !== 'function') return httpsCreate.call(this, options, cb);
    const host = bareHost(String(options.host || options.hostname || 'localhost'));
    tunnel(host, options.port || 443, (err, raw) => {
      if (err) return cb(err);
      try {
        cb(null, tls.connect({ ...options, host, socket: raw }));
      } catch (e) {
        cb(e);
      }
    });
    return undefined;
  };

  // fetch: Node's bundled undici keeps its dispatcher under this symbol. A first call
  // creates it; a new Agent of the same class gets our connector.
  function connect(opts, cb) {
    const secure = opts.protocol === 'https:';
    const host = bareHost(String(opts.hostname));
    tunnel(host, Number(opts.port) || (secure ? 443 : 80), (err, raw) => {
      if (err) return cb(err);
      if (!secure) return cb(null, raw);
      const s = tls.connect({
        socket: raw,
        host,
        servername: opts.servername || (net.isIP(host) ? undefined : host),
        ALPNProtocols: ['http/1.1'],
      });
      let settled = false;
      s.once('secureConnect', () => {
        settled = true;
        cb(null, s);
      });
      s.once('error', (e) => {
        if (!settled) {
          settled = true;
          cb(e);
        }
      });
    });
  }
  // Installed on the first fetch call: loading undici costs ~100 ms that runs without
  // fetch should not pay.
  const key = Symbol.for('undici.globalDispatcher.1');
  const desc = Object.getOwnPropertyDescriptor(globalThis, 'fetch');
  if (!desc) return;
  const realFetch = () => (desc.get ? desc.get.call(globalThis) : desc.value);
  let installed = false;
  function install() {
    if (installed) return;
    installed = true;
    try {
      const probe = realFetch()('data:,');
      if (probe && typeof probe.catch === 'function') probe.catch(() => {});
      const Agent = globalThis[key] && globalThis[key].constructor;
      if (typeof Agent === 'function') globalThis[key] = new Agent({ connect });
    } catch {
      // No usable fetch in this Node: nothing to route.
    }
  }
  const fetch = function fetch(input, init) {
    install();
    return realFetch()(input, init);
  };
  Object.defineProperty(globalThis, 'fetch', { configurable: true, enumerable: desc.enumerable, writable: true, value: fetch });
})();

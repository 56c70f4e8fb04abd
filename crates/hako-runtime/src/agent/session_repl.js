'use strict';
// hako session driver (agent API): one long-lived Node.js context. Requests arrive on fd 4
// and replies leave on fd 1, each as a u32 LE length and a JSON object. The code's console
// and process.stdout/stderr writes are collected per exec.
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const util = require('util');
const Module = require('module');

const CAP = Number(process.env.HAKO_SESSION_OUTPUT_BYTES || 1048576);
const FILE_CAP = Number(process.env.HAKO_SESSION_FILE_BYTES || 16777216);
delete process.env.HAKO_SESSION_OUTPUT_BYTES;
delete process.env.HAKO_SESSION_FILE_BYTES;

const replyWrite = process.stdout.write.bind(process.stdout);
const buffers = { out: [], err: [], outLen: 0, errLen: 0, truncated: false };
function capture(kind) {
  return (chunk, encoding, cb) => {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), typeof encoding === 'string' ? encoding : 'utf8');
    const len = kind + 'Len';
    const room = CAP - buffers[len];
    const kept = buf.subarray(0, Math.max(room, 0));
    buffers[kind].push(kept);
    buffers[len] += kept.length;
    if (buf.length > room && !buffers.truncated) {
      // The code wrote more than the cap: the session ends here, as a run would.
      buffers.truncated = true;
      reply({ output_limited: true, stdout: Buffer.concat(buffers.out).toString('utf8'), stderr: Buffer.concat(buffers.err).toString('utf8') });
    }
    if (typeof encoding === 'function') encoding(); else if (typeof cb === 'function') cb();
    return true;
  };
}
process.stdout.write = capture('out');
process.stderr.write = capture('err');
process.on('uncaughtException', (e) => { process.stderr.write(`${e && e.stack || e}\n`); });
process.on('unhandledRejection', (e) => { process.stderr.write(`${e && e.stack || e}\n`); });

process.chdir('/tmp');
globalThis.require = Module.createRequire('/tmp/session.js');
let count = 0;

function reply(obj) {
  const data = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(data.length);
  replyWrite(Buffer.concat([head, data]));
}

function take() {
  const out = Buffer.concat(buffers.out).toString('utf8');
  const err = Buffer.concat(buffers.err).toString('utf8');
  const truncated = buffers.truncated;
  buffers.out = []; buffers.err = []; buffers.outLen = 0; buffers.errLen = 0; buffers.truncated = false;
  return { out, err, truncated };
}

async function runCode(code) {
  count += 1;
  let value = null; let error = null;
  try {
    let result = vm.runInThisContext(code, { filename: `exec-${count}.js` });
    if (result && typeof result.then === 'function') result = await result;
    if (result !== undefined) value = util.inspect(result);
  } catch (e) {
    error = `${e && e.stack || e}\n`;
    process.stderr.write(error);
  }
  await new Promise((resolve) => setImmediate(resolve));
  const { out, err, truncated } = take();
  return { stdout: out, stderr: err, value, images: [], error, truncated };
}

function workspacePath(rel) {
  const full = path.normalize(path.join('/tmp', rel));
  if (!full.startsWith('/tmp/')) throw new Error(`path ${JSON.stringify(rel)} is outside the workspace`);
  return full;
}

function listFiles(dir, out) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) listFiles(full, out);
    else if (entry.isFile()) out.push({ path: full.slice(5), size: fs.statSync(full).size });
  }
  return out;
}

async function handle(req) {
  if (req.op === 'exec') return runCode(req.code);
  try {
    if (req.op === 'put') {
      const full = workspacePath(req.path);
      fs.mkdirSync(path.dirname(full), { recursive: true });
      fs.writeFileSync(full, Buffer.from(req.data, 'base64'));
      return { ok: true };
    }
    if (req.op === 'get') {
      const full = workspacePath(req.path);
      if (!fs.existsSync(full) || !fs.statSync(full).isFile()) return { missing: true };
      if (fs.statSync(full).size > FILE_CAP) return { failed: `file is larger than ${FILE_CAP} bytes` };
      return { data: fs.readFileSync(full).toString('base64') };
    }
    if (req.op === 'list') return { files: listFiles('/tmp', []) };
  } catch (e) {
    return { failed: String(e && e.message || e) };
  }
  return { failed: `unknown operation ${req.op}` };
}

let pending = Buffer.alloc(0);
let busy = Promise.resolve();
const input = fs.createReadStream(null, { fd: 4 });
input.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 4) {
    const len = pending.readUInt32LE(0);
    if (pending.length < 4 + len) break;
    const req = JSON.parse(pending.subarray(4, 4 + len).toString('utf8'));
    pending = pending.subarray(4 + len);
    busy = busy.then(() => handle(req)).then(reply);
  }
});
input.on('end', () => { busy.then(() => process.exit(0)); });
reply({ ready: true });

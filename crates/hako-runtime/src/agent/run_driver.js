'use strict';
// hako one-shot run driver (agent API). Runs inside the jail as the program: reads the
// request (JSON) from fd 4, writes the input files into /tmp, runs the code as the main
// module, then appends the returned files to stdout after a per-run marker.
const fs = require('fs');
const path = require('path');
const Module = require('module');

const req = JSON.parse(fs.readFileSync(4, 'utf8'));
try { fs.closeSync(4); } catch (e) {}
process.chdir('/tmp');
for (const [rel, data] of Object.entries(req.files || {})) {
  fs.mkdirSync(path.dirname(rel), { recursive: true });
  fs.writeFileSync(rel, Buffer.from(data, 'base64'));
}
if (req.stdin !== null && req.stdin !== undefined) {
  const { Readable } = require('stream');
  const stream = Readable.from([Buffer.from(req.stdin, 'base64')]);
  Object.defineProperty(process, 'stdin', { value: stream, configurable: true });
}

function globRegex(pattern) {
  let out = '';
  for (let i = 0; i < pattern.length;) {
    if (pattern.startsWith('**/', i)) { out += '(?:.*/)?'; i += 3; continue; }
    if (pattern.startsWith('**', i)) { out += '.*'; i += 2; continue; }
    const c = pattern[i++];
    out += c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp('^' + out + '$');
}

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try { off += fs.writeSync(fd, buf, off); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
  }
}

function collect(patterns, limit) {
  const regexes = patterns.map(globRegex);
  const files = {}; const skipped = []; let total = 0;
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
      const rel = dir === '.' ? entry.name : dir + '/' + entry.name;
      if (entry.isDirectory()) { walk(rel); continue; }
      if (!entry.isFile() || !regexes.some((r) => r.test(rel))) continue;
      const size = fs.statSync(rel).size;
      if (total + size > limit) { skipped.push(rel); continue; }
      const data = fs.readFileSync(rel);
      if (total + data.length > limit) { skipped.push(rel); continue; }
      total += data.length;
      files[rel] = data.toString('base64');
    }
  };
  walk('.');
  return { files, skipped };
}

if (req.return && req.return.length) {
  process.on('exit', () => {
    try {
      process.chdir('/tmp');
      const trailer = JSON.stringify(collect(req.return, req.limit));
      writeAll(1, Buffer.from(req.marker + trailer));
    } catch (e) {
      try { fs.writeSync(2, `hako: cannot return files: ${e}\n`); } catch (e2) {}
    }
  });
}

const file = '/tmp/main.js';
const main = new Module(file, null);
main.filename = file;
main.paths = Module._nodeModulePaths('/sandbox');
process.argv[1] = file;
process.mainModule = main;
require.main = main;
main._compile(req.code, file);

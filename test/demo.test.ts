/**
 * `npm start` (the README's first command) answers an HTTPS request for
 * demo.localhost with a certificate from the local CA, prints a curl line
 * that works from any directory, refuses other names with a TLS alert, and
 * stops listening when npm's own process is killed.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { it } from 'node:test';

it('npm start serves demo.localhost with a certificate that chains to the local CA', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'certstate-demo-'));
  const child = spawn('npm', ['start', '--silent'], {
    cwd: join(import.meta.dirname, '..'),
    env: { ...process.env, PORT: '0', CERTSTATE_DATA: dataDir },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true, // its own process group, so npm and node both stop
  });
  let output = '';
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        output += d.toString();
        const m = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(output);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`npm start exited (${code}): ${output}`)));
    });
    const ca = await readFile(join(dataDir, 'local-ca.pem'), 'utf8');
    const { body, peer } = await new Promise<{ body: string; peer: X509Certificate }>((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port, servername: 'demo.localhost', ca, path: '/', headers: { host: 'demo.localhost' } }, (res) => {
        const peer = (res.socket as import('node:tls').TLSSocket).getPeerX509Certificate()!;
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ body, peer }));
      });
      req.on('error', reject);
    });
    // The request verified against the CA (rejectUnauthorized defaults to true); check the chain explicitly too.
    const caCert = new X509Certificate(ca);
    assert.ok(peer.checkIssued(caCert) && peer.verify(caCert.publicKey), 'leaf is signed by the local CA');
    assert.ok(peer.checkHost('demo.localhost'), 'certificate is for demo.localhost');
    assert.equal(JSON.parse(body).hello, 'demo.localhost');
    assert.equal(JSON.parse(body).state, 'valid');

    const cacert = /curl --cacert (\S+) /.exec(output)?.[1];
    assert.ok(cacert && isAbsolute(cacert) && cacert === join(dataDir, 'local-ca.pem'), `the curl line names the CA file absolutely: ${cacert}`);

    // A name the demo does not issue for: a TLS alert the client can report, not a closed connection.
    const sClient = await promisify(execFile)('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'refused.example'], { timeout: 20_000 }).catch(
      (error: { stdout?: string; stderr?: string }) => ({ stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
    );
    assert.match(`${sClient.stdout}${sClient.stderr}`, /alert handshake failure[^\n]*SSL alert number 40/);

    // Killing npm's process (not its group) ends the demo too.
    process.kill(child.pid!, 'SIGTERM');
    const deadline = Date.now() + 20_000;
    while (await listening(port)) {
      assert.ok(Date.now() < deadline, 'the demo still listens 20 s after npm was killed');
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    try {
      process.kill(-child.pid!, 'SIGTERM'); // whatever is left of the group this test started
    } catch {
      // already gone
    }
    await new Promise((r) => (child.exitCode === null && child.signalCode === null ? child.once('exit', r) : r(undefined)));
    await rm(dataDir, { recursive: true, force: true });
  }
});

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

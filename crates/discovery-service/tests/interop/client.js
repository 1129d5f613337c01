#!/usr/bin/env node
// Drives npm eureka-js-client (4.5.0) against a discovery server for
// crates/discovery-service/tests/interop.rs. Configured by environment variables; reports
// what the client does and sees as one JSON object per line on stdout (its own log goes
// to stderr). Commands arrive on stdin, one a line: `stop` (client.stop(): deregister,
// then exit) and `fetch` (fetch the registry now).
//
//   EUREKA_HOST, EUREKA_PORT   the discovery server
//   APP                        the application name to register (sent as given: lower case)
//   INSTANCE_PORT              the port this instance claims to listen on
//   HEARTBEAT_MS, FETCH_MS     heartbeatInterval and registryFetchInterval
//   LEASE_RENEWAL_SECS, LEASE_DURATION_SECS   the instance's leaseInfo
//   WATCH_APPS                 comma-separated applications reported after every fetch
//
// Lines printed: {"event":"request","method","uri"} for every request the client sends
// (through its requestMiddleware hook), {"event":"registered"|"heartbeat"|"deregistered"|
// "registryUpdated"} as the client emits them, {"event":"started","error"} once start()
// finishes, {"event":"fetched","delta","error","apps":{APP:[instance...]}} after every
// registry fetch, {"event":"stopped","error"} after stop().

'use strict';

const readline = require('readline');
const Eureka = require('eureka-js-client').Eureka;

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) {
      process.stderr.write(`client.js: ${name} is required\n`);
      process.exit(2);
    }
    return fallback;
  }
  return value;
}

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

const host = env('EUREKA_HOST');
const port = Number(env('EUREKA_PORT'));
const app = env('APP');
const instancePort = Number(env('INSTANCE_PORT'));
const heartbeatMs = Number(env('HEARTBEAT_MS', '1000'));
const fetchMs = Number(env('FETCH_MS', '1000'));
const renewalSecs = Number(env('LEASE_RENEWAL_SECS', '1'));
const durationSecs = Number(env('LEASE_DURATION_SECS', '3'));
const watch = env('WATCH_APPS', app)
  .split(',')
  .map((a) => a.trim())
  .filter((a) => a.length > 0);

const ip = '127.0.0.1';
const instanceId = `${ip}:${app}:${instancePort}`;

function log(level) {
  return (...args) => {
    const text = args
      .map((a) => (a instanceof Error ? a.stack : typeof a === 'string' ? a : JSON.stringify(a)))
      .join(' ');
    process.stderr.write(`[eureka-js-client ${level}] ${text}\n`);
  };
}

const client = new Eureka({
  logger: { error: log('error'), warn: log('warn'), info: log('info'), debug: log('debug') },
  // No eureka-client.yml is read from here.
  cwd: __dirname,
  shouldUseDelta: true,
  requestMiddleware: (request, done) => {
    emit({ event: 'request', method: (request.method || 'GET').toUpperCase(), uri: request.uri });
    done(request);
  },
  instance: {
    app,
    instanceId,
    hostName: ip,
    ipAddr: ip,
    port: { $: instancePort, '@enabled': 'true' },
    vipAddress: app,
    statusPageUrl: `http://${ip}:${instancePort}/info`,
    healthCheckUrl: `http://${ip}:${instancePort}/health`,
    homePageUrl: `http://${ip}:${instancePort}/`,
    dataCenterInfo: {
      '@class': 'com.netflix.appinfo.InstanceInfo$MyDataCenterInfo',
      name: 'MyOwn',
    },
    leaseInfo: { renewalIntervalInSecs: renewalSecs, durationInSecs: durationSecs },
    metadata: { driver: 'eureka-js-client' },
  },
  eureka: {
    host,
    port,
    servicePath: '/eureka/apps/',
    heartbeatInterval: heartbeatMs,
    registryFetchInterval: fetchMs,
    maxRetries: 1,
    requestRetryDelay: 100,
    fetchRegistry: true,
    registerWithEureka: true,
    preferIpAddress: true,
    // Keep every status in the cache, so an OUT_OF_SERVICE override is visible.
    filterUpInstances: false,
  },
});

function describe(instance) {
  return {
    instanceId: instance.instanceId,
    app: instance.app,
    hostName: instance.hostName,
    ipAddr: instance.ipAddr,
    port: instance.port && instance.port.$,
    status: instance.status,
    overriddenStatus: instance.overriddenStatus || instance.overriddenstatus,
    vipAddress: instance.vipAddress,
    metadata: instance.metadata,
  };
}

function snapshot() {
  const apps = {};
  for (const name of watch) {
    apps[name.toUpperCase()] = client.getInstancesByAppId(name).map(describe);
  }
  return apps;
}

// Report each fetch once it has been applied to the client's cache.
const fetchRegistry = client.fetchRegistry.bind(client);
client.fetchRegistry = (callback) => {
  const delta = Boolean(client.config.shouldUseDelta && client.hasFullRegistry);
  fetchRegistry((err, ...rest) => {
    emit({ event: 'fetched', delta, error: err ? String(err) : null, apps: snapshot() });
    if (typeof callback === 'function') callback(err, ...rest);
  });
};

for (const name of ['registered', 'heartbeat', 'deregistered', 'registryUpdated']) {
  client.on(name, () => emit({ event: name }));
}

emit({ event: 'config', instanceId, app });
client.start((err) => emit({ event: 'started', error: err ? String(err) : null }));

const commands = readline.createInterface({ input: process.stdin });
commands.on('line', (line) => {
  const command = line.trim();
  if (command === 'stop') {
    client.stop((err) => {
      emit({ event: 'stopped', error: err ? String(err) : null });
      process.exit(0);
    });
  } else if (command === 'fetch') {
    client.fetchRegistry();
  } else if (command.length > 0) {
    emit({ event: 'error', error: `unknown command: ${command}` });
  }
});
// The test going away (stdin closed) ends the driver without deregistering.
commands.on('close', () => process.exit(0));

process.on('uncaughtException', (err) => {
  emit({ event: 'error', error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});

// Loads configuration with cloud-config-client and prints what it read as JSON:
// node client.js <endpoint> <name> <profiles,comma,separated> [label]
const client = require('cloud-config-client');
const [endpoint, name, profiles, label] = process.argv.slice(2);
client
  .load({ endpoint, name, profiles: profiles.split(','), label })
  .then((config) => {
    const out = {};
    config.forEach((key, value) => { out[key] = value; }, false);
    console.log(JSON.stringify({ properties: out, db: config.get('db.url'), first: config.get('list[0]') }));
  })
  .catch((e) => { console.error(e.stack || String(e)); process.exit(1); });

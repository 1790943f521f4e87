// What the minimal upstream answers: bodies shaped and sized like Nova's for one instance.
import { randomBytes } from 'node:crypto';

export const INSTANCE_UUID = 'd8e02d56-2648-49a3-bf97-6be8f1204f38';
export const PROJECT_ID = 'c2b0f6a8e0b94b6f8a9c3c1d5f8e7a61';

const metaData = {
  random_seed: randomBytes(512).toString('base64'),
  uuid: INSTANCE_UUID,
  availability_zone: 'nova',
  keys: [
    {
      data: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5Fq1gqD2Gf0z1bMPr9mQ0FjS5mS7j+Hh8qKp0u5p3tQ1gY9bQe6wN3vX8cJ2dL4kR7mT0yU1iO9pA3sD6fG8hJ0kL2zX4cV6bN8mQ1wE3rT5yU7iO9pA1sD3fG5hJ7kL9zX1cV3bN5mQ7wE9rT1yU3iO5pA7sD9fG1hJ3kL5zX7cV9bN1mQ3wE5rT7yU9iO1pA3sD5fG7hJ9kL1zX3cV5bN7mQ9wE1rT3yU5iO7pA9sD1fG3hJ5kL7zX9cV1bN3mQ5wE7rT9yU1iO3pA5 bench@controller\n',
      type: 'ssh',
      name: 'bench-key',
    },
  ],
  public_keys: {
    'bench-key':
      'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5Fq1gqD2Gf0z1bMPr9mQ0FjS5mS7j+Hh8qKp0u5p3tQ1gY9bQe6wN3vX8cJ2dL4kR7mT0yU1iO9pA3sD6fG8hJ0kL2zX4cV6bN8mQ1wE3rT5yU7iO9pA1sD3fG5hJ7kL9zX1cV3bN5mQ7wE9rT1yU3iO5pA7sD9fG1hJ3kL5zX7cV9bN1mQ3wE5rT7yU9iO1pA3sD5fG7hJ9kL1zX3cV5bN7mQ9wE1rT3yU5iO7pA9sD1fG3hJ5kL7zX9cV1bN3mQ5wE7rT9yU1iO3pA5 bench@controller\n',
  },
  hostname: 'bench-vm.novalocal',
  name: 'bench-vm',
  launch_index: 0,
  meta: { role: 'bench' },
  project_id: PROJECT_ID,
  devices: [],
  dedicated_cpus: [],
};

const networkData = {
  links: [{ id: 'tapd8e02d56-26', vif_id: 'd8e02d56-2648-49a3-bf97-6be8f1204f38', type: 'bridge', mtu: 1500, ethernet_mac_address: 'fa:16:3e:00:00:02' }],
  networks: [
    { id: 'network0', type: 'ipv4_dhcp', link: 'tapd8e02d56-26', network_id: '6c4a1b52-1f3e-4b8e-9d6e-0f2f5b1c9a77' },
  ],
  services: [],
};

const versions = ['2012-08-10', '2013-04-04', '2013-10-17', '2015-10-15', '2016-06-30', '2016-10-06', '2017-02-22', '2018-08-27', '2020-10-14', 'latest'];
const userData = '#cloud-config\nhostname: bench-vm\nruncmd:\n  - [ sh, -c, "echo booted > /run/bench" ]\n';

/** path → [content-type, body]; `local-ipv4` is answered from X-Forwarded-For by the server. */
export const BODIES: Record<string, [string, string]> = {
  '/openstack': ['text/plain; charset=UTF-8', versions.join('\n')],
  '/openstack/latest/meta_data.json': ['application/json', JSON.stringify(metaData)],
  '/openstack/latest/user_data': ['text/plain; charset=UTF-8', userData],
  '/openstack/latest/vendor_data.json': ['application/json', '{}'],
  '/openstack/latest/vendor_data2.json': ['application/json', '{}'],
  '/openstack/latest/network_data.json': ['application/json', JSON.stringify(networkData)],
  '/latest/meta-data/': [
    'text/plain; charset=UTF-8',
    'ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\ninstance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\npublic-hostname\npublic-ipv4\npublic-keys/\nreservation-id\nsecurity-groups',
  ],
  '/latest/meta-data/instance-id': ['text/plain; charset=UTF-8', 'i-0000000a'],
  '/latest/meta-data/hostname': ['text/plain; charset=UTF-8', 'bench-vm.novalocal'],
  '/latest/meta-data/placement/availability-zone': ['text/plain; charset=UTF-8', 'nova'],
  '/latest/user-data': ['text/plain; charset=UTF-8', userData],
};

/** What cloud-init fetches at boot with the OpenStack datasource, then a few EC2 leaves. */
export const BOOT_CRAWL = [
  '/openstack',
  '/openstack/latest/meta_data.json',
  '/openstack/latest/user_data',
  '/openstack/latest/vendor_data.json',
  '/openstack/latest/vendor_data2.json',
  '/openstack/latest/network_data.json',
  '/latest/meta-data/',
  '/latest/meta-data/instance-id',
  '/latest/meta-data/local-ipv4',
  '/latest/meta-data/hostname',
  '/latest/meta-data/placement/availability-zone',
  '/latest/user-data',
];

// Neutron's exceptions (neutron_lib.exceptions and l3), with their type names, statuses and messages.
import { ApiError } from '../common/errors.js';

const e = (status: number, type: string, message: string) => new ApiError(status, type, message);

export const faults = {
  // 400
  badRequest: (resource: string, msg: string) => e(400, 'BadRequest', `Bad ${resource} request: ${msg}.`),
  invalidAttr: (attr: string, reason: string) => e(400, 'HTTPBadRequest', `Invalid input for ${attr}. Reason: ${reason}.`),
  invalidInput: (msg: string) => e(400, 'InvalidInput', `Invalid input for operation: ${msg}.`),
  malformed: (reason: string) => e(400, 'MalformedRequestBody', `Malformed request body: ${reason}.`),
  missingAttr: (attr: string) => e(400, 'HTTPBadRequest', `Failed to parse request. Required attribute '${attr}' not specified`),
  readOnly: (attr: string) => e(400, 'HTTPBadRequest', `Cannot update read-only attribute ${attr}`),
  unknownAttr: (attr: string) => e(400, 'HTTPBadRequest', `Unrecognized attribute(s) '${attr}'`),
  badFilter: (key: string, resource: string) => e(400, 'HTTPBadRequest', `${key} is invalid attribute for ${resource}`),
  invalidIpForSubnet: (ip: string) => e(400, 'InvalidIpForSubnet', `IP address ${ip} is not a valid IP for the specified subnet.`),
  invalidIpForNetwork: (ip: string) => e(400, 'InvalidIpForNetwork', `IP address ${ip} is not a valid IP for any of the subnets on the specified network.`),
  invalidAllocationPool: (pool: string) => e(400, 'InvalidAllocationPool', `The allocation pool ${pool} is not valid.`),
  outOfBoundsPool: (pool: string, cidr: string) => e(400, 'OutOfBoundsAllocationPool', `The allocation pool ${pool} spans beyond the subnet cidr ${cidr}.`),
  overlappingPools: (a: string, b: string, cidr: string) => e(400, 'OverlappingAllocationPools', `Found overlapping allocation pools: ${a} and ${b} for subnet ${cidr}.`),
  // 404
  notFoundPath: () => e(404, 'HTTPNotFound', 'The resource could not be found.'),
  networkNotFound: (id: string) => e(404, 'NetworkNotFound', `Network ${id} could not be found.`),
  subnetNotFound: (id: string) => e(404, 'SubnetNotFound', `Subnet ${id} could not be found.`),
  portNotFound: (id: string) => e(404, 'PortNotFound', `Port ${id} could not be found.`),
  routerNotFound: (id: string) => e(404, 'RouterNotFound', `Router ${id} could not be found.`),
  agentNotFound: (id: string) => e(404, 'AgentNotFound', `Agent ${id} could not be found.`),
  routerInterfaceNotFound: (router: string, port: string) => e(404, 'RouterInterfaceNotFound', `Router ${router} does not have an interface with id ${port}`),
  routerInterfaceNotFoundForSubnet: (router: string, subnet: string) =>
    e(404, 'RouterInterfaceNotFoundForSubnet', `Router ${router} has no interface on subnet ${subnet}`),
  // 405
  notAllowed: () => e(405, 'HTTPMethodNotAllowed', 'The server could not comply with the request since it is either malformed or otherwise incorrect.'),
  // 409
  ipInUse: (net: string, ip: string) => e(409, 'IpAddressInUse', `Unable to complete operation for network ${net}. The IP address ${ip} is in use.`),
  macInUse: (net: string, mac: string) => e(409, 'MacAddressInUse', `Unable to complete operation for network ${net}. The mac address ${mac} is in use.`),
  ipGenerationFailure: (net: string) => e(409, 'IpAddressGenerationFailure', `No more IP addresses available on network ${net}.`),
  macGenerationFailure: (net: string) => e(503, 'MacAddressGenerationFailure', `Unable to generate unique mac on network ${net}.`),
  networkInUse: (net: string) => e(409, 'NetworkInUse', `Unable to complete operation on network ${net}. There are one or more ports still in use on the network.`),
  subnetInUse: (subnet: string) =>
    e(409, 'SubnetInUse', `Unable to complete operation on subnet ${subnet}: One or more ports have an IP allocation from this subnet.`),
  portInUse: (port: string, net: string, device: string) =>
    e(409, 'PortInUse', `Unable to complete operation on port ${port} for network ${net}. Port already has an attached device ${device}.`),
  routerInUse: (router: string) => e(409, 'RouterInUse', `Router ${router} still has ports`),
  l3PortInUse: (port: string, owner: string) => e(409, 'L3PortInUse', `Port ${port} has owner ${owner} and therefore cannot be deleted directly via the port API.`),
  gatewayConflict: (ip: string, pool: string) => e(409, 'GatewayConflictWithAllocationPools', `Gateway ip ${ip} conflicts with allocation pool ${pool}.`),
};

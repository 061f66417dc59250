// Public face of @inlaid/config: the gateway configuration, parsed and validated once from the environment.
export { ConfigError, GatewayConfig, parseConfig } from './gateway-config';

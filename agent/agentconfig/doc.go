// Package agentconfig decodes agent.yaml strictly into the agent's typed
// runtime configuration.
package agentconfig

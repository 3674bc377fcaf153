package libmetricq

// The configuration from the manager: at register and by "config" RPC.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// unmarshalNumbers keeps JSON numbers exact (json.Number), so integers
// beyond 2^53 survive a round trip through the config handler.
func unmarshalNumbers(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

func (s *Source) applyConfig(ctx context.Context, config map[string]any, raw []byte) error {
	latest := append([]byte(nil), raw...)
	s.config.Store(&latest)
	if s.opts.onConfig == nil {
		s.log.Info("received configuration", "keys", len(config))
		return nil
	}
	if err := s.opts.onConfig(ctx, s, config); err != nil {
		return fmt.Errorf("config handler: %w", err)
	}
	return nil
}

// Config returns the JSON text of the latest configuration from the manager
// ("{}" before any).
func (s *Source) Config() []byte {
	if latest := s.config.Load(); latest != nil {
		return append([]byte(nil), *latest...)
	}
	return []byte("{}")
}

func (s *Source) onConfigRPC(ctx context.Context, args map[string]json.RawMessage) (any, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	config := make(map[string]any, len(args))
	for k, v := range args {
		var value any
		if err := unmarshalNumbers(v, &value); err != nil {
			return nil, err
		}
		config[k] = value
	}
	ctx, cancel := s.withRPCTimeout(ctx)
	defer cancel()
	return nil, s.applyConfig(ctx, config, raw)
}

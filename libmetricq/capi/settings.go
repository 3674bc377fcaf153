package main

// The settings a host makes before connecting (client version, reconnect
// timeout, heartbeat) and the wait for a source that stops on its own.

/*
#include "capi_internal.h"
*/
import "C"

import "github.com/libmetricq/libmetricq/libmetricq/syncsource"

//export libmq_go_source_set_client_version
func libmq_go_source_set_client_version(src C.uintptr_t, version *C.char) C.int {
	return status(src, func(s *syncsource.Source) error {
		v, err := copyString(version, "client version")
		if err != nil {
			return err
		}
		return s.SetClientVersion(v)
	})
}

//export libmq_go_source_set_reconnect_timeout
func libmq_go_source_set_reconnect_timeout(src C.uintptr_t, seconds C.double) C.int {
	return status(src, func(s *syncsource.Source) error { return s.SetReconnectTimeout(float64(seconds)) })
}

//export libmq_go_source_set_heartbeat
func libmq_go_source_set_heartbeat(src C.uintptr_t, seconds C.double) C.int {
	return status(src, func(s *syncsource.Source) error { return s.SetHeartbeat(float64(seconds)) })
}

//export libmq_go_source_wait
func libmq_go_source_wait(src C.uintptr_t, timeout C.double) C.int {
	return timed(src, timeout, (*syncsource.Source).Wait)
}

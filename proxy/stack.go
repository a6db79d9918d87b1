package proxy

import "runtime"

// x/net/http2 serves each stream on a goroutine of its own, whose stack
// starts small and is doubled whenever a call overflows it: each time, the
// runtime copies the stack and adjusts every frame on it, which costs the
// more the deeper the request is by then. On h2-tls that happened about
// twice per request, deep in the forwarder (6.5% of CPU samples, 29% of
// instructions under callgrind). Growing the stack on entry, while it holds
// a few frames, in one step, costs about half of that.

// stackReserve is the room made on entry. 4 KiB was measured best: 8 and
// 16 KiB save no more CPU and leave every stream with a larger stack
// (+1.3 MB of stacks at 256 streams in flight for 8 KiB).
const stackReserve = 4 << 10

// growStack makes room for stackReserve more bytes of stack below the
// caller; the runtime grows a stack to fit the frame that overflows it in
// one step.
//
//go:noinline
func growStack() {
	var pad [stackReserve]byte
	runtime.KeepAlive(&pad)
}

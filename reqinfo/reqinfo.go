// Package reqinfo owns the per-request record: what Portico learned about one
// request (client, route, pool, backend, identity, outcome, timings). The
// proxy creates it when a request arrives and fills it in as the request
// moves on; middlewares, the access log and metrics read it, and
// middlewares add what they establish (the authenticated user, the request
// ID). It is a leaf: it imports no other Portico package, so every package
// on the request path can share it without importing proxy.
package reqinfo

import (
	"context"
	"net/netip"
	"time"
)

// Info is the record of one request. One goroutine owns it at a time: the
// request's handler chain, then whatever observes the finished request.
type Info struct {
	Start time.Time

	// ClientIP is the peer's address or, when the peer is a trusted proxy,
	// the address it forwarded for; resolved once per request.
	ClientIP netip.Addr
	// TrustedPeer: the peer is one of server.trusted_proxies, so headers it
	// sets about the client (X-Forwarded-For, a request ID) are believed.
	TrustedPeer bool

	Route string // the route's name; empty when no route matched
	Pool  string

	Backend     string        // host:port of the last attempt
	Attempts    int           // backend attempts made
	BackendTTFB time.Duration // from the last attempt's start to its response headers

	User      string // the authenticated identity: user, key name or token subject
	RequestID string

	// Status is what the client was sent, or StatusClientClosed when it went
	// away before an answer. BytesOut counts response body bytes written.
	Status   int
	BytesOut int64
	BytesIn  int64 // request body bytes read
}

// StatusClientClosed is recorded (never sent) when the client goes away
// before the response, as nginx logs 499.
const StatusClientClosed = 499

// infoContext carries an Info in the same allocation as the context node
// that carries it.
type infoContext struct {
	context.Context
	info Info
}

type key struct{}

func (c *infoContext) Value(k any) any {
	if k == (key{}) {
		return &c.info
	}
	return c.Context.Value(k)
}

// NewContext returns a child of parent that carries a new Info, and the Info.
func NewContext(parent context.Context) (context.Context, *Info) {
	c := &infoContext{Context: parent}
	return c, &c.info
}

// From returns the request's Info, or nil outside Portico's request path.
func From(ctx context.Context) *Info {
	ri, _ := ctx.Value(key{}).(*Info)
	return ri
}

// Detach returns a context that carries what ctx carries but its record:
// the base of a connection handed over to HTTP/2 from an HTTP/1 request
// ("Upgrade: h2c"), whose streams are requests with records of their own.
func Detach(ctx context.Context) context.Context { return detached{ctx} }

type detached struct{ context.Context }

func (d detached) Value(k any) any {
	if k == (key{}) {
		return nil
	}
	return d.Context.Value(k)
}

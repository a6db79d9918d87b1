package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// healthBackend is a real gRPC server (the standard health service, so no
// generated code is needed) that shows what reached it:
//   - Check("missing") fails with NotFound and a message, in the trailers;
//   - Check answers with the time left before the caller's deadline in the
//     "deadline-left-ms" header, or "none";
//   - Watch streams the statuses SERVING, NOT_SERVING, SERVING.
type healthBackend struct {
	healthpb.UnimplementedHealthServer
}

func (healthBackend) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	left := "none"
	if d, ok := ctx.Deadline(); ok {
		left = strconv.FormatInt(time.Until(d).Milliseconds(), 10)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("deadline-left-ms", left))
	if req.Service == "missing" {
		return nil, status.Error(codes.NotFound, "no service called missing: check the name")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (healthBackend) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	for _, s := range []healthpb.HealthCheckResponse_ServingStatus{
		healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING,
	} {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: s}); err != nil {
			return err
		}
	}
	return status.Error(codes.ResourceExhausted, "stream over")
}

// startGRPCBackend serves the health service over h2c and returns its h2c:// URL.
func startGRPCBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, healthBackend{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return "h2c://" + ln.Addr().String()
}

// TestGRPCThroughProxy calls a real gRPC server on an h2c:// backend through
// Portico, over TLS (ALPN h2) and over cleartext h2c.
func TestGRPCThroughProxy(t *testing.T) {
	doc := poolDoc(startGRPCBackend(t)) + anyRoute
	for _, tc := range []struct {
		name  string
		tlsOn bool
	}{
		{"HTTPS listener", true},
		{"h2c listener", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFront(t, "h2c = true", doc, tc.tlsOn)
			creds := insecure.NewCredentials()
			if tc.tlsOn {
				creds = credentials.NewTLS(&tls.Config{RootCAs: f.roots, ServerName: "front.test"})
			}
			conn, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := healthpb.NewHealthClient(conn)

			t.Run("unary OK with the deadline propagated", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				var hdr metadata.MD
				res, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
				if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
					t.Fatalf("Check: %v, %v", res, err)
				}
				left, err := strconv.Atoi(first(hdr["deadline-left-ms"]))
				if err != nil || left <= 0 || left > 5000 {
					t.Errorf("backend saw deadline-left-ms %q, want a deadline within the client's 5s", hdr["deadline-left-ms"])
				}
			})

			t.Run("non-OK status and message come through (trailers-only response)", func(t *testing.T) {
				_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "missing"})
				st, _ := status.FromError(err)
				if st.Code() != codes.NotFound || st.Message() != "no service called missing: check the name" {
					t.Errorf("got %v %q, want NotFound and the backend's message", st.Code(), st.Message())
				}
			})

			t.Run("server streaming delivers every message, then the status in trailers", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err != nil {
					t.Fatal(err)
				}
				var got []healthpb.HealthCheckResponse_ServingStatus
				for {
					res, err := stream.Recv()
					if err != nil {
						if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "stream over" {
							t.Errorf("stream ended with %v, want ResourceExhausted \"stream over\"", err)
						}
						if errors.Is(err, io.EOF) {
							t.Error("stream ended without a status")
						}
						break
					}
					got = append(got, res.Status)
				}
				if len(got) != 3 || got[1] != healthpb.HealthCheckResponse_NOT_SERVING {
					t.Errorf("streamed %v, want SERVING, NOT_SERVING, SERVING", got)
				}
			})
		})
	}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"strconv"
	"testing"
)

func TestCopyBufGrowsOnlyAfterAFullRead(t *testing.T) {
	base := largeInUse.Load()
	var b copyBuf
	if n := len(b.next(false)); n != 32<<10 {
		t.Fatalf("first buffer: %d bytes, want 32 KiB", n)
	}
	if n := len(b.next(false)); n != 32<<10 {
		t.Fatalf("after a short read: %d bytes, want 32 KiB still", n)
	}
	if n := len(b.next(true)); n != 256<<10 {
		t.Fatalf("after a full read: %d bytes, want 256 KiB", n)
	}
	if b.small != nil {
		t.Error("the 32 KiB buffer is still held with the large one")
	}
	if n := len(b.next(false)); n != 256<<10 {
		t.Fatalf("a large buffer is kept to the body's end, got %d bytes", n)
	}
	if got := largeInUse.Load() - base; got != 1 {
		t.Fatalf("large buffers in use: %d, want 1", got)
	}
	b.release()
	if got := largeInUse.Load() - base; got != 0 {
		t.Fatalf("after release, large buffers in use: %d, want 0", got)
	}
	if b.small != nil || b.large != nil {
		t.Fatal("release kept a buffer")
	}
}

// Many large downloads at once hold no more than maxLargeBuffers large
// buffers; the others go on with 32 KiB.
func TestCopyBufLargeBuffersAreCapped(t *testing.T) {
	base := largeInUse.Load()
	bufs := make([]copyBuf, maxLargeBuffers+5)
	large := 0
	for i := range bufs {
		if len(bufs[i].next(true)) == 256<<10 {
			large++
		}
	}
	if large != maxLargeBuffers-int(base) {
		t.Fatalf("%d large buffers handed out, want %d", large, maxLargeBuffers-base)
	}
	if got := largeInUse.Load(); got != maxLargeBuffers {
		t.Fatalf("large buffers counted in use: %d, want %d", got, maxLargeBuffers)
	}
	for i := range bufs {
		bufs[i].release()
	}
	if got := largeInUse.Load(); got != base {
		t.Fatalf("after release: %d in use, want %d", got, base)
	}
}

// A large response goes to the client intact, framed by length or chunked,
// in far fewer writes than 32 KiB buffers make.
func TestLargeResponseIntactInLargeWrites(t *testing.T) {
	const size = 4<<20 + 7
	data := make([]byte, size)
	_, _ = rand.Read(data)
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/length" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = w.Write(data)
	})
	f := startFront(t, "", poolDoc(be.URL)+anyRoute, false)
	client := &http.Client{}
	for _, path := range []string{"/length", "/chunked"} {
		before := f.writes.Load()
		res, err := client.Get("http://" + f.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(body, data) {
			t.Fatalf("%s: %d bytes, %v; want the backend's %d intact", path, len(body), err, size)
		}
		// 32 KiB buffers take 128 writes or more for 4 MiB.
		if w := f.writes.Load() - before; w >= 128 {
			t.Errorf("%s: %d writes for %d bytes; want fewer than 128", path, w, size)
		}
	}
}

// WebSocket checks: the shell proxy handler (PTY, resize, exit) and the port forwarder.
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"
	slicer "github.com/slicervm/sdk"
	"github.com/slicervm/sdk/forward"
	"github.com/slicervm/sdk/shell"
)

func frame(t byte, payload []byte) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = t
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

func wsChecks(e *env) {
	check("shell.NewProxyHandler", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		srv := httptest.NewServer(shell.NewProxyHandler(shell.Options{
			BaseURL: e.url, Token: e.token, VMName: e.node, Shell: "/bin/sh", Cwd: "/tmp",
		}))
		defer srv.Close()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			return "", err
		}
		defer conn.CloseNow()
		size := make([]byte, 8)
		binary.BigEndian.PutUint32(size[0:4], 91)
		binary.BigEndian.PutUint32(size[4:8], 37)
		_ = conn.Write(ctx, websocket.MessageBinary, frame(shell.FrameTypeWindowSize, size))
		_ = conn.Write(ctx, websocket.MessageBinary, frame(shell.FrameTypeHeartbeat, nil))
		cmd := "stty size; pwd; tty >/dev/null && echo is-a-tty; echo shell-$((6*7)); exit\n"
		if err := conn.Write(ctx, websocket.MessageBinary, frame(shell.FrameTypeData, []byte(cmd))); err != nil {
			return "", err
		}
		var out strings.Builder
		closed := false
		for !closed {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				// The session ends with the shell: a close frame or the connection closing.
				closed = websocket.CloseStatus(err) != -1 || err == io.EOF || strings.Contains(err.Error(), "EOF")
				if !closed {
					return out.String(), fail("read: %v", err)
				}
				break
			}
			if typ != websocket.MessageBinary || len(data) < 5 {
				continue
			}
			switch data[0] {
			case shell.FrameTypeData:
				out.Write(data[5:])
			case shell.FrameTypeSessionClose, shell.FrameTypeShutdown:
				closed = true
			}
		}
		o := out.String()
		if !strings.Contains(o, "37 91") || !strings.Contains(o, "is-a-tty") || !strings.Contains(o, "shell-42") || !strings.Contains(o, "/tmp") {
			return "", fail("shell output %q: want the PTY size 37 91, a tty, /tmp and shell-42", trim(o))
		}
		return "", nil
	})
	// Two servers in the node: one on every address, one on its loopback only (a forward of
	// 127.0.0.1:PORT reaches the node's own loopback on Slicer: its agent dials inside).
	for _, srv := range []struct{ name, bind, port string }{
		{"forward.Start(server on 0.0.0.0)", "0.0.0.0", "8081"},
		{"forward.Start(server on the node's loopback)", "127.0.0.1", "8080"},
	} {
		check(srv.name, func(ctx context.Context) (string, error) {
			return forwardCheck(ctx, e, srv.bind, srv.port)
		})
	}
}

// forwardCheck serves a page in the node on bind:port and reads it through forward.Start's
// local listener for 127.0.0.1:port in the node.
func forwardCheck(ctx context.Context, e *env, bind, port string) (string, error) {
	{
		if err := e.needNode(); err != nil {
			return "", err
		}
		bg, err := e.c.ExecBackground(ctx, e.node, slicer.ExecBackgroundRequest{
			Command: "mkdir -p /tmp/www && echo forwarded-ok > /tmp/www/index.html && exec httpd -f -p " + bind + ":" + port + " -h /tmp/www",
			Shell:   "/bin/sh",
		})
		if err != nil {
			return "", fail("start a web server in the node: %v", err)
		}
		defer func() {
			_, _ = e.c.ExecKill(context.Background(), e.node, bg.ExecID, slicer.KillOptions{Signal: "SIGKILL"})
			_, _ = e.c.ExecDelete(context.Background(), e.node, bg.ExecID)
		}()
		// The server answers inside the node first, so that a failure below is the forward's.
		var inside string
		for i := 0; i < 20; i++ {
			if inside, err = e.sh(ctx, "wget -qO- http://127.0.0.1:" + port + "/"); err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if inside != "forwarded-ok\n" {
			return "", fail("the web server in the node does not answer inside it: %q %v", inside, err)
		}
		fwd, err := forward.Start(ctx, forward.Options{
			BaseURL: e.url, Token: e.token, VMName: e.node,
			Specs: []string{"127.0.0.1:0:127.0.0.1:" + port},
		})
		if err != nil {
			return "", err
		}
		defer fwd.Close()
		ls := fwd.Listeners()
		if len(ls) != 1 || ls[0].Port == 0 {
			return "", fail("listeners %+v", ls)
		}
		var body []byte
		var last error
		for i := 0; i < 20; i++ {
			res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", ls[0].Port))
			if err == nil {
				body, _ = io.ReadAll(res.Body)
				res.Body.Close()
				if string(body) == "forwarded-ok\n" {
					return "", nil
				}
			}
			last = err
			time.Sleep(250 * time.Millisecond)
		}
		return "", fail("through the forward: %q %v", body, last)
	}
}

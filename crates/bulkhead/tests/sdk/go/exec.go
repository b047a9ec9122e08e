// Exec checks: buffered and streamed exec in both stdio modes, stdin, exit codes, signals,
// the os/exec-like RemoteCmd, and background execs with their ring buffer.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	slicer "github.com/slicervm/sdk"
)

// collect drains a streamed exec: stdout, stderr, the exit frame's code, its error, the types.
func collect(ch <-chan slicer.SlicerExecWriteResult) (stdout, stderr string, code int, errText string, types []string) {
	for f := range ch {
		types = append(types, f.Type)
		switch f.Type {
		case "stdout":
			stdout += f.Data + f.Stdout
		case "stderr":
			stderr += f.Data + f.Stderr
		case "exit":
			code = f.ExitCode
		}
		if f.Error != "" {
			errText = f.Error
		}
	}
	return
}

func execChecks(e *env) {
	check("exec.ExecBuffered(text)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "echo", Args: []string{"hello", "world"}, Stdio: "text"})
		if err != nil {
			return "", err
		}
		if r.Stdout != "hello world\n" || r.ExitCode != 0 || r.Pid <= 0 || r.StartedAt.IsZero() || r.EndedAt.IsZero() {
			return "", fail("got %+v, want stdout \"hello world\\n\", exit 0, pid, started_at, ended_at", r)
		}
		return "", nil
	})
	check("exec.ExecBuffered(base64,binary)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "printf", Args: []string{`\000\377\200a`}})
		if err != nil {
			return "", err
		}
		b, err := r.StdoutBytes()
		if err != nil {
			return "", err
		}
		// The SDK asks for base64 and decodes it in place (clearing Encoding): bytes that are
		// not UTF-8 come through only that way.
		if !bytes.Equal(b, []byte{0, 0xff, 0x80, 'a'}) {
			return "", fail("stdout bytes %q, want 00 ff 80 61", b)
		}
		return "", nil
	})
	check("exec.ExecBuffered(exit code,stderr,env,cwd,shell)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{
			Command: "echo $FOO $(pwd) >&2; exit 3", Shell: "/bin/sh", Env: []string{"FOO=bar"}, Cwd: "/tmp",
		})
		if err != nil {
			return "", err
		}
		if r.ExitCode != 3 || r.Stderr != "bar /tmp\n" {
			return "", fail("got %+v, want exit 3 and stderr \"bar /tmp\\n\"", r)
		}
		return "", nil
	})
	check("exec.ExecBuffered(missing command)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "/no/such/command"})
		if err != nil {
			return "", fail("a missing command should be a result, not a failed request: %v", err)
		}
		if r.ExitCode == 0 && r.Error == "" {
			return "", fail("got %+v, want a non-zero exit code or an error", r)
		}
		return fmt.Sprintf("exit %d error %q", r.ExitCode, r.Error), nil
	})
	check("exec.ExecBuffered(uid,gid,NonRootUser)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "id", Args: []string{"-u"}, UID: 1000, GID: 1000})
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(r.Stdout) != "1000" {
			return "", fail("uid=1000 ran as %q (%+v)", r.Stdout, r)
		}
		r, err = e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "id", Args: []string{"-u"}, UID: slicer.NonRootUser, GID: slicer.NonRootUser})
		if err != nil {
			return "", fail("NonRootUser: %v", err)
		}
		// NonRootUser leaves uid off the wire: the daemon's default user runs it.
		if _, err := strconv.Atoi(strings.TrimSpace(r.Stdout)); r.ExitCode != 0 || err != nil {
			return "", fail("NonRootUser (uid omitted) gave %+v", r)
		}
		return "uid omitted runs as uid " + strings.TrimSpace(r.Stdout), nil
	})
	check("exec.ExecBuffered(signal)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: "kill -TERM $$", Shell: "/bin/sh"})
		if err != nil {
			return "", err
		}
		if !strings.Contains(strings.ToUpper(r.Signal), "TERM") && r.Signal != "15" {
			return "", fail("got %+v, want signal SIGTERM as a string", r)
		}
		return r.Signal, nil
	})
	check("exec.Exec(stream,text)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		ch, err := e.c.Exec(ctx, e.node, slicer.SlicerExecRequest{Command: "echo out; echo err >&2", Shell: "/bin/sh", Stdio: "text"})
		if err != nil {
			return "", err
		}
		out, errOut, code, errText, types := collect(ch)
		if out != "out\n" || errOut != "err\n" || code != 0 || errText != "" || !slices.Contains(types, "exit") {
			return "", fail("stdout %q stderr %q exit %d error %q frames %v", out, errOut, code, errText, types)
		}
		return strings.Join(types, ","), nil
	})
	check("exec.Exec(stream,base64,binary)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		ch, err := e.c.Exec(ctx, e.node, slicer.SlicerExecRequest{Command: "printf", Args: []string{`\001\376`}})
		if err != nil {
			return "", err
		}
		out, _, code, errText, _ := collect(ch)
		if out != "\x01\xfe" || code != 0 || errText != "" {
			return "", fail("stdout %q exit %d error %q, want 01 fe", out, code, errText)
		}
		return "", nil
	})
	check("exec.Exec(stream,exit code)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		ch, err := e.c.Exec(ctx, e.node, slicer.SlicerExecRequest{Command: "exit 4", Shell: "/bin/sh"})
		if err != nil {
			return "", err
		}
		_, _, _, errText, _ := collect(ch)
		if !strings.Contains(errText, "4") {
			return "", fail("error %q, want the exit code 4 reported", errText)
		}
		return errText, nil
	})
	check("exec.ExecWithReader(stdin)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		ch, err := e.c.ExecWithReader(ctx, e.node, slicer.SlicerExecRequest{Command: "cat", Stdin: true}, strings.NewReader("piped\x00in"))
		if err != nil {
			return "", err
		}
		out, _, code, errText, _ := collect(ch)
		if out != "piped\x00in" || code != 0 || errText != "" {
			return "", fail("stdout %q exit %d error %q", out, code, errText)
		}
		return "", nil
	})
}

func cmdChecks(e *env) {
	check("exec.Command.Output", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		cmd := e.c.Command(ctx, e.node, "echo", "remote", "cmd")
		if !strings.Contains(cmd.String(), "echo remote cmd") {
			return "", fail("String() = %q", cmd.String())
		}
		out, err := cmd.Output()
		if err != nil {
			return "", err
		}
		if string(out) != "remote cmd\n" || !cmd.ProcessState.Success() || cmd.ProcessState.ExitCode() != 0 {
			return "", fail("output %q state %v", out, cmd.ProcessState)
		}
		return "", nil
	})
	check("exec.CommandContext.Run(ExitError)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		cmd := e.c.CommandContext(ctx, e.node, "sh", "-c", "exit 2")
		err := cmd.Run()
		var xe *slicer.ExitError
		if !errors.As(err, &xe) || xe.ExitCode() != 2 || !xe.Exited() {
			return "", fail("Run() = %v, want an ExitError with code 2", err)
		}
		return xe.Error(), nil
	})
	check("exec.Command.CombinedOutput+Environ+Dir", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		cmd := e.c.Command(ctx, e.node, "sh", "-c", "echo $A; pwd >&2")
		cmd.Env = []string{"A=b"}
		cmd.Dir = "/tmp"
		if !slices.Contains(cmd.Environ(), "A=b") {
			return "", fail("Environ() = %v", cmd.Environ())
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", err
		}
		if !strings.Contains(string(out), "b\n") || !strings.Contains(string(out), "/tmp\n") {
			return "", fail("combined output %q", out)
		}
		return "", nil
	})
	check("exec.Command.Start+Wait+pipes", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		cmd := e.c.Command(ctx, e.node, "sh", "-c", "cat; echo to-stderr >&2")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return "", err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return "", err
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return "", err
		}
		if err := cmd.Start(); err != nil {
			return "", err
		}
		go func() {
			_, _ = io.WriteString(stdin, "through-the-pipe")
			_ = stdin.Close()
		}()
		errc := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(stderr); errc <- b }()
		out, _ := io.ReadAll(stdout)
		errOut := <-errc
		if err := cmd.Wait(); err != nil {
			return "", fail("Wait: %v (stdout %q)", err, out)
		}
		if string(out) != "through-the-pipe" || string(errOut) != "to-stderr\n" {
			return "", fail("stdout %q stderr %q", out, errOut)
		}
		return "", nil
	})
}

func bgChecks(e *env) {
	var id string
	check("bg.ExecBackground", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBackground(ctx, e.node, slicer.ExecBackgroundRequest{
			Command: "echo bg-one; sleep 1; echo bg-two >&2", Shell: "/bin/sh", Cwd: "/tmp",
		})
		if err != nil {
			return "", err
		}
		if r.ExecID == "" || r.PID <= 0 || r.StartedAt.IsZero() || r.RingBytes <= 0 {
			return "", fail("got %+v", *r)
		}
		id = r.ExecID
		return id, nil
	})
	check("bg.ExecList", func(ctx context.Context) (string, error) {
		if id == "" {
			return "", fail("no background exec")
		}
		list, err := e.c.ExecList(ctx, e.node)
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(list, func(i slicer.ExecBackgroundInfo) bool { return i.ExecID == id }) {
			return "", fail("%s not in %+v", id, list)
		}
		return "", nil
	})
	check("bg.ExecInfo", func(ctx context.Context) (string, error) {
		if id == "" {
			return "", fail("no background exec")
		}
		i, err := e.c.ExecInfo(ctx, e.node, id)
		if err != nil {
			return "", err
		}
		if i.ExecID != id || i.PID <= 0 || i.Command == "" || i.RingBytes <= 0 {
			return "", fail("got %+v", *i)
		}
		return fmt.Sprintf("%+v", *i), nil
	})
	check("bg.ExecWaitExit", func(ctx context.Context) (string, error) {
		if id == "" {
			return "", fail("no background exec")
		}
		w, err := e.c.ExecWaitExit(ctx, e.node, id, 20*time.Second)
		if err != nil {
			return "", err
		}
		if w.Running || w.TimedOut || w.ExitCode == nil || *w.ExitCode != 0 || w.EndedAt == nil {
			return "", fail("got %+v", *w)
		}
		return "", nil
	})
	check("bg.ExecLogs", func(ctx context.Context) (string, error) {
		if id == "" {
			return "", fail("no background exec")
		}
		ch, err := e.c.ExecLogs(ctx, e.node, id, slicer.LogOptions{})
		if err != nil {
			return "", err
		}
		out, errOut, _, errText, types := collect(ch)
		if out != "bg-one\n" || errOut != "bg-two\n" || errText != "" || !slices.Contains(types, "exit") {
			return "", fail("stdout %q stderr %q error %q frames %v", out, errOut, errText, types)
		}
		// A cursor past the first frame replays only what follows it.
		ch, err = e.c.ExecLogs(ctx, e.node, id, slicer.LogOptions{FromID: 2, Follow: true})
		if err != nil {
			return "", err
		}
		n := 0
		for range ch {
			n++
		}
		if n == 0 || n >= len(types) {
			return "", fail("from_id=2 gave %d frames of %d", n, len(types))
		}
		return strings.Join(types, ","), nil
	})
	check("bg.ExecDelete", func(ctx context.Context) (string, error) {
		if id == "" {
			return "", fail("no background exec")
		}
		d, err := e.c.ExecDelete(ctx, e.node, id)
		if err != nil {
			return "", err
		}
		if d.ExecID != id || !d.Reaped {
			return "", fail("got %+v", *d)
		}
		// ExecInfo wraps the status in its own error text ("410 Gone - ...").
		if _, err := e.c.ExecInfo(ctx, e.node, id); err == nil || !strings.Contains(err.Error(), "410 Gone") && !strings.Contains(err.Error(), "404 Not Found") {
			return "", fail("ExecInfo after delete = %v, want 410 or 404", err)
		}
		return "", nil
	})
	check("bg.ExecKill(signal,grace_ms)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBackground(ctx, e.node, slicer.ExecBackgroundRequest{Command: "sleep", Args: []string{"300"}})
		if err != nil {
			return "", err
		}
		k, err := e.c.ExecKill(ctx, e.node, r.ExecID, slicer.KillOptions{Signal: "SIGTERM", GraceMs: 500})
		if err != nil {
			return "", err
		}
		if k.ExecID != r.ExecID || !strings.Contains(k.SignalSent, "TERM") {
			return "", fail("kill answered %+v", *k)
		}
		w, err := e.c.ExecWaitExit(ctx, e.node, r.ExecID, 10*time.Second)
		if err != nil {
			return "", err
		}
		if w.Running || !strings.Contains(strings.ToUpper(w.Signal), "TERM") {
			return "", fail("after kill: %+v", *w)
		}
		_, _ = e.c.ExecDelete(ctx, e.node, r.ExecID)
		return k.SignalSent, nil
	})
	check("bg.ExecBackground(ring_bytes,gap)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		r, err := e.c.ExecBackground(ctx, e.node, slicer.ExecBackgroundRequest{
			Command: "seq 1 100000", Shell: "/bin/sh", RingBytes: 65536,
		})
		if err != nil {
			return "", err
		}
		defer e.c.ExecDelete(context.Background(), e.node, r.ExecID)
		if r.RingBytes != 65536 {
			return "", fail("ring_bytes %d, want 65536", r.RingBytes)
		}
		if _, err := e.c.ExecWaitExit(ctx, e.node, r.ExecID, 20*time.Second); err != nil {
			return "", err
		}
		info, err := e.c.ExecInfo(ctx, e.node, r.ExecID)
		if err != nil {
			return "", err
		}
		ch, err := e.c.ExecLogs(ctx, e.node, r.ExecID, slicer.LogOptions{})
		if err != nil {
			return "", err
		}
		out, _, _, _, types := collect(ch)
		if !slices.Contains(types, "gap") || info.BytesDropped <= 0 || !strings.HasSuffix(out, "\n100000\n") || len(out) > 65536 {
			return "", fail("frames %v, dropped %d, kept %d bytes ending %q", uniq(types), info.BytesDropped, len(out), tail(out))
		}
		return "dropped " + strconv.FormatInt(info.BytesDropped, 10), nil
	})
}

func uniq(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func tail(s string) string {
	if len(s) > 20 {
		return s[len(s)-20:]
	}
	return s
}

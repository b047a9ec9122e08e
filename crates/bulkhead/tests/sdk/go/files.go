// File checks: cp in every mode both ways (binary, tar, recursive; into a directory and its
// contents), chunked copy, the fs routes and watch.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	slicer "github.com/slicervm/sdk"
)

// sh runs a shell snippet in the node and returns its stdout; a non-zero exit is an error.
func (e *env) sh(ctx context.Context, script string) (string, error) {
	r, err := e.c.ExecBuffered(ctx, e.node, slicer.SlicerExecRequest{Command: script, Shell: "/bin/sh", Stdio: "text"})
	if err != nil {
		return "", fmt.Errorf("exec %q: %w", script, err)
	}
	if r.ExitCode != 0 {
		return r.Stdout, fmt.Errorf("exec %q: exit %d: %s", script, r.ExitCode, r.Stderr)
	}
	return r.Stdout, nil
}

func writeLocal(path string, data []byte) {
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		panic(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func copyChecks(e *env) {
	bin := randomBytes(300_000)
	local := filepath.Join(e.tmp, "blob.bin")
	writeLocal(local, bin)
	tree := filepath.Join(e.tmp, "tree")
	writeLocal(filepath.Join(tree, "a.txt"), []byte("alpha\n"))
	writeLocal(filepath.Join(tree, "sub", "b.bin"), bin[:1000])
	_ = os.MkdirAll(filepath.Join(tree, "empty"), 0o755)

	check("cp.CpToVM(binary)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.CpToVM(ctx, e.node, local, "/tmp/blob.bin", 0, 0, "", "binary"); err != nil {
			return "", err
		}
		out, err := e.sh(ctx, "sha256sum /tmp/blob.bin; stat -c '%u %g' /tmp/blob.bin")
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(out, sum(bin)) || !strings.HasSuffix(out, "0 0\n") {
			return "", fail("in the node: %q, want sha256 %s owned 0 0", out, sum(bin))
		}
		// Into an existing directory: the file keeps its name.
		if _, err := e.sh(ctx, "mkdir -p /tmp/into"); err != nil {
			return "", err
		}
		if err := e.c.CpToVM(ctx, e.node, local, "/tmp/into/", 1000, 1000, "0640", "binary"); err != nil {
			return "", fail("into a directory: %v", err)
		}
		out, err = e.sh(ctx, "stat -c '%u %g %a %s' /tmp/into/blob.bin")
		if err != nil {
			return "", err
		}
		if out != fmt.Sprintf("1000 1000 640 %d\n", len(bin)) {
			return "", fail("copied into a directory: %q, want uid 1000 gid 1000 mode 640", out)
		}
		return "", nil
	})
	check("cp.CpToVM(tar)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/up /tmp/up2"); err != nil {
			return "", err
		}
		if err := e.c.CpToVM(ctx, e.node, tree, "/tmp/up", 0, 0, "", "tar"); err != nil {
			return "", fail("directory into a directory: %v", err)
		}
		if err := e.c.CpToVM(ctx, e.node, tree+"/.", "/tmp/up2", 0, 0, "", "tar"); err != nil {
			return "", fail("contents into a directory: %v", err)
		}
		out, err := e.sh(ctx, "cat /tmp/up/tree/a.txt /tmp/up2/a.txt; sha256sum /tmp/up/tree/sub/b.bin | cut -c1-64; test -d /tmp/up/tree/empty && test -d /tmp/up2/empty && echo dirs")
		if err != nil {
			return "", err
		}
		want := "alpha\nalpha\n" + sum(bin[:1000]) + "\ndirs\n"
		if out != want {
			return "", fail("in the node: %q, want %q", out, want)
		}
		return "", nil
	})
	check("cp.CpFromVM(binary)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "printf 'from\\000vm' > /tmp/from.bin"); err != nil {
			return "", err
		}
		dst := filepath.Join(e.tmp, "from.bin")
		if err := e.c.CpFromVM(ctx, e.node, "/tmp/from.bin", dst, "", "binary"); err != nil {
			return "", err
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			return "", err
		}
		if string(got) != "from\x00vm" {
			return "", fail("local copy %q", got)
		}
		return "", nil
	})
	check("cp.CpFromVM(tar)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/down/d && echo one > /tmp/down/one && echo two > /tmp/down/d/two"); err != nil {
			return "", err
		}
		into := filepath.Join(e.tmp, "down-into")
		contents := filepath.Join(e.tmp, "down-contents")
		_ = os.MkdirAll(into, 0o755)
		_ = os.MkdirAll(contents, 0o755)
		if err := e.c.CpFromVM(ctx, e.node, "/tmp/down", into, "", "tar"); err != nil {
			return "", fail("directory: %v", err)
		}
		if err := e.c.CpFromVM(ctx, e.node, "/tmp/down/.", contents, "", "tar"); err != nil {
			return "", fail("contents: %v", err)
		}
		a, _ := os.ReadFile(filepath.Join(into, "down", "d", "two"))
		b, _ := os.ReadFile(filepath.Join(contents, "one"))
		if string(a) != "two\n" || string(b) != "one\n" {
			return "", fail("local copies %q %q, want into/down/d/two and contents/one", a, b)
		}
		return "", nil
	})
	check("cp.CpFromVM(recursive)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/rec/x && echo r > /tmp/rec/x/r && echo single > /tmp/single"); err != nil {
			return "", err
		}
		dst := filepath.Join(e.tmp, "rec-out")
		if err := e.c.CpFromVM(ctx, e.node, "/tmp/rec", dst, "", "recursive"); err != nil {
			return "", fail("directory: %v", err)
		}
		file := filepath.Join(e.tmp, "single-out")
		if err := e.c.CpFromVM(ctx, e.node, "/tmp/single", file, "", "recursive"); err != nil {
			return "", fail("regular file: %v", err)
		}
		a, _ := os.ReadFile(filepath.Join(dst, "x", "r"))
		b, _ := os.ReadFile(file)
		if string(a) != "r\n" || string(b) != "single\n" {
			return "", fail("local copies %q %q", a, b)
		}
		return "", nil
	})
}

func chunkedChecks(e *env) {
	check("cp.SupportsChunkedCopy", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		ok, err := e.c.SupportsChunkedCopy(ctx, e.node)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fail("SupportsChunkedCopy = false")
		}
		return "", nil
	})
	check("cp.CpToVMChunked(binary)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		data := randomBytes(3<<20 + 12345)
		local := filepath.Join(e.tmp, "big.bin")
		writeLocal(local, data)
		err := e.c.CpToVMChunked(ctx, e.node, local, "/tmp/big.bin", slicer.ChunkedCopyOptions{
			Mode: "binary", ChunkSize: 1 << 20, Concurrency: 3, UID: 1000, GID: 1000, Permissions: "0600",
		})
		if err != nil {
			return "", err
		}
		out, err := e.sh(ctx, "sha256sum /tmp/big.bin | cut -c1-64; stat -c '%u %a' /tmp/big.bin")
		if err != nil {
			return "", err
		}
		if out != sum(data)+"\n1000 600\n" {
			return "", fail("in the node %q, want %s owned 1000 mode 600", out, sum(data))
		}
		return "", nil
	})
	check("cp.CpToVMChunked(tar)", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		tree := filepath.Join(e.tmp, "ctree")
		data := randomBytes(2<<20 + 7)
		writeLocal(filepath.Join(tree, "x", "big"), data)
		writeLocal(filepath.Join(tree, "small"), []byte("s\n"))
		if _, err := e.sh(ctx, "mkdir -p /tmp/chunked"); err != nil {
			return "", err
		}
		err := e.c.CpToVMChunked(ctx, e.node, tree, "/tmp/chunked", slicer.ChunkedCopyOptions{Mode: "tar", ChunkSize: 1 << 20})
		if err != nil {
			return "", err
		}
		out, err := e.sh(ctx, "sha256sum /tmp/chunked/ctree/x/big | cut -c1-64; cat /tmp/chunked/ctree/small")
		if err != nil {
			return "", err
		}
		if out != sum(data)+"\ns\n" {
			return "", fail("in the node %q", out)
		}
		return "", nil
	})
}

func fsChecks(e *env) {
	content := append([]byte("fs-data\x00"), randomBytes(1000)...)
	check("fs.WriteFile+ReadFile", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/fs"); err != nil {
			return "", err
		}
		if err := e.c.WriteFile(ctx, e.node, "/tmp/fs/f.bin", content, 1000, 1000, "0600"); err != nil {
			return "", err
		}
		got, _, err := e.c.ReadFile(ctx, e.node, "/tmp/fs/f.bin")
		if err != nil {
			return "", err
		}
		if !bytes.Equal(got, content) {
			return "", fail("read back %d bytes, want the %d written", len(got), len(content))
		}
		out, err := e.sh(ctx, "stat -c '%u %a' /tmp/fs/f.bin")
		if err != nil {
			return "", err
		}
		if out != "1000 600\n" {
			return "", fail("owner/mode %q, want 1000 600", out)
		}
		return "", nil
	})
	check("fs.ReadDir", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/fs/sub && printf 123 > /tmp/fs/three"); err != nil {
			return "", err
		}
		list, err := e.c.ReadDir(ctx, e.node, "/tmp/fs")
		if err != nil {
			return "", err
		}
		var three, sub *slicer.SlicerFSInfo
		for i := range list {
			switch list[i].Name {
			case "three":
				three = &list[i]
			case "sub":
				sub = &list[i]
			}
		}
		if three == nil || sub == nil || three.Size != 3 || three.Type != "file" || sub.Type != "directory" || three.Mtime.IsZero() || three.Mode == "" {
			return "", fail("readdir: %+v", list)
		}
		return fmt.Sprintf("%+v", list), nil
	})
	check("fs.Stat+Exists", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		st, err := e.c.Stat(ctx, e.node, "/tmp/fs/three")
		if err != nil {
			return "", err
		}
		if st.Size != 3 || st.Type != "file" || st.Name != "three" {
			return "", fail("stat: %+v", *st)
		}
		yes, err := e.c.Exists(ctx, e.node, "/tmp/fs/three")
		if err != nil || !yes {
			return "", fail("Exists(existing) = %v, %v", yes, err)
		}
		no, err := e.c.Exists(ctx, e.node, "/tmp/fs/none")
		if err != nil || no {
			return "", fail("Exists(missing) = %v, %v", no, err)
		}
		return fmt.Sprintf("%+v", *st), nil
	})
	check("fs.Mkdir", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.Mkdir(ctx, e.node, slicer.SlicerFSMkdirRequest{Path: "/tmp/fs/m/n/o", Recursive: true, Mode: "0750"}); err != nil {
			return "", err
		}
		out, err := e.sh(ctx, "stat -c '%F %a' /tmp/fs/m/n/o")
		if err != nil {
			return "", err
		}
		if out != "directory 750\n" {
			return "", fail("made %q, want directory 750", out)
		}
		if err := e.c.Mkdir(ctx, e.node, slicer.SlicerFSMkdirRequest{Path: "/tmp/fs/p/q"}); err == nil {
			return "", fail("a non-recursive mkdir with a missing parent succeeded")
		}
		return "", nil
	})
	check("fs.Remove", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if err := e.c.Remove(ctx, e.node, "/tmp/fs/three", false); err != nil {
			return "", err
		}
		if err := e.c.Remove(ctx, e.node, "/tmp/fs/m", false); err == nil {
			return "", fail("a non-recursive remove of a non-empty directory succeeded")
		}
		if err := e.c.Remove(ctx, e.node, "/tmp/fs/m", true); err != nil {
			return "", err
		}
		out, _ := e.sh(ctx, "ls /tmp/fs")
		if slices.Contains(strings.Fields(out), "three") || slices.Contains(strings.Fields(out), "m") {
			return "", fail("left: %q", out)
		}
		return "", nil
	})
}

func watchChecks(e *env) {
	// touch writes files after a pause, so that the watch is set up first.
	touch := func(ctx context.Context, dir string, names ...string) {
		go func() {
			time.Sleep(700 * time.Millisecond)
			for _, n := range names {
				_, _ = e.sh(ctx, fmt.Sprintf("echo x > %s/%s", dir, n))
			}
		}()
	}
	check("watch.WatchFS", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/w1"); err != nil {
			return "", err
		}
		events, errs := e.c.WatchFS(ctx, e.node, slicer.SlicerFSWatchRequest{
			Paths: []string{"/tmp/w1"}, Patterns: []string{"*.txt"}, Timeout: "20s", MaxEvents: 1,
		})
		touch(ctx, "/tmp/w1", "skip.log", "hit.txt")
		var got []slicer.SlicerFSWatchEvent
		for ev := range events {
			got = append(got, ev)
		}
		if err := <-errs; err != nil {
			return "", fail("watch: %v (events %+v)", err, got)
		}
		if len(got) != 1 || got[0].Path != "/tmp/w1/hit.txt" || got[0].Type == "" || got[0].ID == 0 {
			return "", fail("events %+v, want one for /tmp/w1/hit.txt", got)
		}
		return fmt.Sprintf("%+v", got[0]), nil
	})
	check("watch.WatchFSIter", func(ctx context.Context) (string, error) {
		if err := e.needNode(); err != nil {
			return "", err
		}
		if _, err := e.sh(ctx, "mkdir -p /tmp/w2/deep"); err != nil {
			return "", err
		}
		touch(ctx, "/tmp/w2/deep", "f")
		var got []slicer.SlicerFSWatchEvent
		for ev, err := range e.c.WatchFSIter(ctx, e.node, slicer.SlicerFSWatchRequest{
			Paths: []string{"/tmp/w2"}, Recursive: true, Timeout: "20s", MaxEvents: 1,
		}) {
			if err != nil {
				return "", fail("watch: %v (events %+v)", err, got)
			}
			got = append(got, ev)
		}
		if len(got) != 1 || got[0].Path != "/tmp/w2/deep/f" {
			return "", fail("events %+v, want one for /tmp/w2/deep/f", got)
		}
		if _, err := slicer.ParseFSWatchTimestamp(got[0].Timestamp); err != nil {
			return "", fail("timestamp %q: %v", got[0].Timestamp, err)
		}
		return "", nil
	})
}

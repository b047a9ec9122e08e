// Bench mode (SDK_SET=bench): times SDK_N buffered exec round trips of `echo hi` through the
// SDK's ExecBuffered against SDK_NODE, after a warm-up, and prints the samples in microseconds
// as one JSON object. crates/bulkhead/benches/sdk_exec.rs runs it beside bulkhead's own client.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	slicer "github.com/slicervm/sdk"
)

func benchExec(e *env) {
	n, _ := strconv.Atoi(os.Getenv("SDK_N"))
	if n <= 0 {
		n = 200
	}
	node := os.Getenv("SDK_NODE")
	ctx := context.Background()
	req := slicer.SlicerExecRequest{Command: "echo", Args: []string{"hi"}}
	run := func() {
		r, err := e.c.ExecBuffered(ctx, node, req)
		if err != nil || r.Stdout != "hi\n" {
			fmt.Fprintf(os.Stderr, "sdkcheck bench: exec gave %+v, %v\n", r, err)
			os.Exit(1)
		}
	}
	for i := 0; i < 10; i++ {
		run()
	}
	samples := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		run()
		samples = append(samples, float64(time.Since(t).Nanoseconds())/1000)
	}
	out, _ := json.Marshal(map[string]any{"samples_us": samples})
	fmt.Println(string(out))
}

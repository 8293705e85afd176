package nvml

import (
	"errors"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlError carries an NVML return code through error wrapping.
type nvmlError struct {
	op  string
	ret gonvml.Return
}

func (e nvmlError) Error() string { return e.op + ": " + reason(e.ret) }

func reasonOf(err error) string {
	var ne nvmlError
	if errors.As(err, &ne) {
		return reason(ne.ret)
	}
	return "nvml_error"
}

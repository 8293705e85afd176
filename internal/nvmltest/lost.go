package nvmltest

import (
	"reflect"
	"sync/atomic"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// Bus says whether one GPU is still on the bus. A GPU that fell off it
// (Xid 79) answers every call on its handle, and on the handles of its MIG
// instances, with GPU_IS_LOST until a reset brings it back: nvml.h lists
// NVML_ERROR_GPU_IS_LOST "if the target GPU has fallen off the bus or is
// otherwise inaccessible" for every device query.
type Bus struct{ lost atomic.Bool }

// Lose takes the GPU off the bus; Restore brings it back.
func (b *Bus) Lose()        { b.lost.Store(true) }
func (b *Bus) Restore()     { b.lost.Store(false) }
func (b *Bus) IsLost() bool { return b.lost.Load() }

var returnType = reflect.TypeOf(gonvml.SUCCESS)

// Wire makes every call of dev that is set now, and that ends in an
// nvml.Return, answer GPU_IS_LOST (with zero values) while the GPU is off
// the bus. Call it once dev's calls are all set: a call set later is not
// wired.
func (b *Bus) Wire(dev *mock.Device) {
	v := reflect.ValueOf(dev).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		typ := f.Type()
		if f.Kind() != reflect.Func || f.IsNil() || !f.CanSet() || typ.NumOut() == 0 || typ.Out(typ.NumOut()-1) != returnType {
			continue
		}
		inner := reflect.ValueOf(f.Interface())
		f.Set(reflect.MakeFunc(typ, func(args []reflect.Value) []reflect.Value {
			if !b.lost.Load() {
				if typ.IsVariadic() {
					return inner.CallSlice(args)
				}
				return inner.Call(args)
			}
			out := make([]reflect.Value, typ.NumOut())
			for j := range out {
				out[j] = reflect.Zero(typ.Out(j))
			}
			out[len(out)-1] = reflect.ValueOf(gonvml.ERROR_GPU_IS_LOST)
			return out
		}))
	}
}

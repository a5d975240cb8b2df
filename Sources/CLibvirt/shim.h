#ifndef TANDEM_CLIBVIRT_SHIM_H
#define TANDEM_CLIBVIRT_SHIM_H
#include <stddef.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

// virConnectDomainEventRegisterAny takes one generic callback type that each event id casts
// to its own signature (VIR_DOMAIN_EVENT_CALLBACK): one typed wrapper per event Tandem follows.
// `freecb` releases `opaque` once libvirt will not call the callback again (after the last
// dispatch, which may come after deregistration returned).

static inline int tandem_virt_on_lifecycle(virConnectPtr conn, virConnectDomainEventCallback cb, void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}
static inline int tandem_virt_on_metadata(virConnectPtr conn, virConnectDomainEventMetadataChangeCallback cb, void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}
static inline int tandem_virt_on_device_added(virConnectPtr conn, virConnectDomainEventDeviceAddedCallback cb, void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}
static inline int tandem_virt_on_device_removed(virConnectPtr conn, virConnectDomainEventDeviceRemovedCallback cb, void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}

static void tandem_virt_quiet(void *userdata, virErrorPtr error) { (void)userdata; (void)error; }
/// libvirt prints every error on stderr unless told otherwise; Tandem reports them itself.
static inline void tandem_virt_silence_errors(void) { virSetErrorFunc(NULL, tandem_virt_quiet); }

#endif
